# Run after a library is linked (see SwampLibstdcxx.cmake):
#   cmake -DLIB=<library> -DNM=<nm> -DREADELF=<readelf> -DSTDLIB=<libstdc++.so.6> [-DSUSPECTS=..]
#         -P SwampCheckLibstdcxx.cmake
# Fails, removing LIB, where LIB defines symbols that the shared libstdc++ defines (a copy of
# libstdc++.a linked in) or does not NEED libstdc++.so.6.
cmake_minimum_required(VERSION 3.21)
foreach(_v LIB NM READELF STDLIB)
  if(NOT ${_v})
    message(FATAL_ERROR "SwampCheckLibstdcxx.cmake: -D${_v}=... is required")
  endif()
endforeach()
get_filename_component(_name "${LIB}" NAME)

# STRONG: only the names LIB itself defines with a strong binding (T, D, B, R...): a template
# instantiation of ours (a weak W / V symbol, e.g. std::operator+<char>) may share a name with one
# libstdc++ exports and is harmless; libstdc++'s own compiled code (codecvt's members) is strong.
function(_swamp_defined out lib strong)
  # the dynamic symbol table: a stripped library has no other (plain `nm` would see nothing)
  execute_process(COMMAND "${NM}" -D --defined-only "${lib}"
    OUTPUT_VARIABLE _txt RESULT_VARIABLE _rc ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "swamp: `${NM} -D --defined-only ${lib}` failed: ${_err}")
  endif()
  string(REGEX MATCHALL "[^\n]+" _lines "${_txt}")
  set(_names "")
  foreach(_ln IN LISTS _lines)
    # "<address> <type> <name>"; versioned names end in @@GLIBCXX_x / @GLIBCXX_x
    if(_ln MATCHES "^[0-9a-fA-F]* *([A-Za-z]) ([^ @]+)")
      set(_type "${CMAKE_MATCH_1}")
      set(_name "${CMAKE_MATCH_2}")
      if(NOT strong OR NOT _type MATCHES "^[WwVvu]$")
        list(APPEND _names "${_name}")
      endif()
    endif()
  endforeach()
  set(${out} "${_names}" PARENT_SCOPE)
endfunction()

_swamp_defined(_ours "${LIB}" ON)
_swamp_defined(_std "${STDLIB}" OFF)
string(JOIN "\n" _stdset ${_std})
set(_stdset "\n${_stdset}\n")
set(_copied "")
foreach(_s IN LISTS _ours)
  # only names that can come from the C++ runtime: std::, __gnu_cxx::, the ABI's __cxa_ / __gxx_,
  # operator new / delete, their vtables, typeinfos and guards
  if(_s MATCHES "^(_ZN?K?S[taiosd]|_ZN?K?9__gnu_cxx|_ZT[VISHW]N?S|_ZT[VISHW]N?9__gnu_cxx|_ZGV|_Zn[wa]|_Zd[la]|__cxa_|__gxx_|_ZNK?10__cxxabiv1|_ZT[VIS]N10__cxxabiv1)")
    string(FIND "${_stdset}" "\n${_s}\n" _at)
    if(NOT _at EQUAL -1)
      list(APPEND _copied "${_s}")
    endif()
  endif()
endforeach()

execute_process(COMMAND "${READELF}" -d "${LIB}" OUTPUT_VARIABLE _dyn RESULT_VARIABLE _rc)
set(_needs_shared OFF)
if(_rc EQUAL 0 AND _dyn MATCHES "Shared library: \\[libstdc\\+\\+\\.so\\.6\\]")
  set(_needs_shared ON)
endif()

list(LENGTH _copied _n)
if(_n GREATER 0 OR NOT _needs_shared)
  file(REMOVE "${LIB}")
  if(_n GREATER 0)
    # the telling ones first: codecvt's members and ostream::_M_insert are not templates a
    # library of ours could instantiate, only libstdc++'s own compiled code
    set(_telling "${_copied}")
    list(FILTER _telling INCLUDE REGEX "codecvt|_M_insert")
    list(APPEND _telling ${_copied})
    list(REMOVE_DUPLICATES _telling)
    list(SUBLIST _telling 0 4 _examples)
    find_program(_filt c++filt)
    if(_filt)
      execute_process(COMMAND "${_filt}" ${_examples} OUTPUT_VARIABLE _examples
                      OUTPUT_STRIP_TRAILING_WHITESPACE)
      string(REPLACE "\n" "; " _examples "${_examples}")
    endif()
    set(_what "defines ${_n} symbols of libstdc++ itself (for example ${_examples})")
  else()
    set(_what "does not NEED libstdc++.so.6")
  endif()
  if(NOT SUSPECTS)
    set(SUSPECTS "none of CMake's linker-flag variables: look at LDFLAGS, CMAKE_ARGS, a toolchain file and the -L directories of the link command")
  endif()
  message(FATAL_ERROR
    "swamp: ${_name} ${_what}: a static copy of libstdc++ (libstdc++.a) was linked into it. "
    "Two libstdc++ copies in one process keep two iostream/locale states: numbers vanish from "
    "messages or the process crashes. The cause is -static-libstdc++ in the linker flags or a -L "
    "directory holding libstdc++.a ahead of the compiler's own; suspects: ${SUSPECTS}. "
    "Remove it and build again (the library was deleted).")
endif()
