# One libstdc++ per process: every library of ours binds to the compiler's SHARED libstdc++,
# whatever the flags and the linker's search path say, and checks its own result after the link.
#
# Why: g++ ends every link with a plain `-lstdc++`, and ld takes the first libstdc++.so OR
# libstdc++.a along its search path. A `-L` directory ahead of the toolchain's own that holds only
# the archive (LDFLAGS, a package's link directories, a toolchain set-up) or `-static-libstdc++`
# in any linker-flags variable links libstdc++'s internals into our library without a word. Two
# copies in one process keep two locale / iostream states: numbers written to streams vanish, or
# the process crashes (seen on a GPU machine, GCC 13 archive beside a newer runtime).
#
# How: the toolchain's own libstdc++.so.6 (`c++ -print-file-name=libstdc++.so.6`) is linked by
# full path after our objects, so every libstdc++ symbol we use is resolved from the shared library
# before the trailing -lstdc++ is reached, and no archive member is pulled in. After the link,
# cmake/SwampCheckLibstdcxx.cmake inspects the library (nm -D, readelf -d) and fails the build,
# removing the library, where it defines libstdc++ internals or does not NEED libstdc++.so.6.
#
#   swamp_bind_shared_libstdcxx(<target>)

set(_SWAMP_LIBSTDCXX_CHECK "${CMAKE_CURRENT_LIST_DIR}/SwampCheckLibstdcxx.cmake")

# The toolchain's shared libstdc++, found once. Empty where the compiler does not use libstdc++
# (clang with libc++, MSVC) or is not on an ELF platform: nothing to bind there.
if(NOT DEFINED SWAMP_LIBSTDCXX_SHARED)
  set(_swamp_so "")
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND CMAKE_SYSTEM_NAME STREQUAL "Linux"
     AND NOT CMAKE_CXX_FLAGS MATCHES "-stdlib=libc\\+\\+")
    execute_process(
      COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=libstdc++.so.6
      OUTPUT_VARIABLE _swamp_so OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _swamp_rc)
    if(NOT _swamp_rc EQUAL 0 OR NOT IS_ABSOLUTE "${_swamp_so}" OR NOT EXISTS "${_swamp_so}")
      set(_swamp_so "")
    else()
      get_filename_component(_swamp_so "${_swamp_so}" ABSOLUTE)
    endif()
  endif()
  set(SWAMP_LIBSTDCXX_SHARED "${_swamp_so}" CACHE FILEPATH
      "The compiler's shared libstdc++ that every swamp_ext library links by full path")
endif()

# Where a static libstdc++ is asked for, say that it is overridden for our libraries (the check
# after the link proves it), naming the variable.
# The variables that could bring libstdc++.a in are named again by the check should it fail.
set(_SWAMP_LIBSTDCXX_SUSPECTS "")
foreach(_swamp_var CMAKE_SHARED_LINKER_FLAGS CMAKE_MODULE_LINKER_FLAGS CMAKE_CXX_FLAGS)
  foreach(_swamp_cfg "" _RELEASE _RELWITHDEBINFO _MINSIZEREL _DEBUG)
    set(_swamp_val "${${_swamp_var}${_swamp_cfg}}")
    if(_swamp_val MATCHES "-static-libstdc\\+\\+")
      message(STATUS
        "swamp: ${_swamp_var}${_swamp_cfg} holds -static-libstdc++; swamp_ext's libraries link "
        "the shared ${SWAMP_LIBSTDCXX_SHARED} anyway (one libstdc++ per process, as torch)")
    endif()
    if(_swamp_val MATCHES "-static-libstdc\\+\\+|libstdc\\+\\+|-L|-Wl,-Bstatic")
      string(APPEND _SWAMP_LIBSTDCXX_SUSPECTS "${_swamp_var}${_swamp_cfg}='${_swamp_val}' ")
    endif()
  endforeach()
endforeach()
foreach(_swamp_env LDFLAGS CMAKE_ARGS LIBRARY_PATH)
  if(DEFINED ENV{${_swamp_env}} AND NOT "$ENV{${_swamp_env}}" STREQUAL "")
    string(APPEND _SWAMP_LIBSTDCXX_SUSPECTS "environment ${_swamp_env}='$ENV{${_swamp_env}}' ")
  endif()
endforeach()
string(REPLACE ";" "," _SWAMP_LIBSTDCXX_SUSPECTS "${_SWAMP_LIBSTDCXX_SUSPECTS}")

function(swamp_bind_shared_libstdcxx target)
  if(NOT SWAMP_LIBSTDCXX_SHARED)
    return()
  endif()
  # PRIVATE: not part of the exported interface; consumers link their own toolchain's runtime.
  target_link_libraries(${target} PRIVATE "${SWAMP_LIBSTDCXX_SHARED}")
  set(_nm "${CMAKE_NM}")
  if(NOT _nm)
    find_program(_nm nm)
  endif()
  set(_readelf "${CMAKE_READELF}")
  if(NOT _readelf)
    find_program(_readelf readelf)
  endif()
  if(NOT _nm OR NOT _readelf)
    message(WARNING "swamp: nm or readelf not found: ${target} is linked against the shared "
                    "libstdc++ but not checked after the link (install binutils)")
    return()
  endif()
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND "${CMAKE_COMMAND}" "-DLIB=$<TARGET_FILE:${target}>" "-DNM=${_nm}"
            "-DREADELF=${_readelf}" "-DSTDLIB=${SWAMP_LIBSTDCXX_SHARED}"
            "-DSUSPECTS=${_SWAMP_LIBSTDCXX_SUSPECTS}"
            -P "${_SWAMP_LIBSTDCXX_CHECK}"
    COMMENT "Checking that ${target} uses the shared libstdc++ (no copy linked in)"
    VERBATIM)
endfunction()
