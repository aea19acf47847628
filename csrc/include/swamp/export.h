// SWAMP_API: marks the core library's exported symbols (the library hides the rest).
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
