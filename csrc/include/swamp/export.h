#pragma once

#if defined(_WIN32)
#if defined(SWAMP_CORE_BUILDING)
#define SWAMP_API __declspec(dllexport)
#else
#define SWAMP_API __declspec(dllimport)
#endif
#else
#define SWAMP_API __attribute__((visibility("default")))
#endif
