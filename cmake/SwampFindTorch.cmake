# Find Torch from the Python interpreter that builds us (the torch users will import), unless the
# caller already points CMake at a LibTorch (Torch_DIR / CMAKE_PREFIX_PATH).
if(NOT Torch_DIR)
  find_package(Python COMPONENTS Interpreter QUIET)
  if(Python_EXECUTABLE)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _swamp_torch_prefix
      OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _swamp_torch_rc)
    if(_swamp_torch_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_swamp_torch_prefix}")
    endif()
  endif()
endif()

find_package(Torch QUIET)
if(NOT Torch_FOUND)
  # The usual cause: pip's build isolation (a fresh environment without torch). One line to copy.
  message(FATAL_ERROR
    "swamp_ext builds against the torch you run: install torch first, then build without "
    "isolation: pip install --no-build-isolation .")
endif()
# torch's config leaves CMAKE_CXX_FLAGS alone and puts the ABI define on the `torch` target.
get_filename_component(SWAMP_TORCH_LIBDIR "${TORCH_LIBRARY}" DIRECTORY)
message(STATUS "swamp: Torch ${Torch_VERSION} from ${SWAMP_TORCH_LIBDIR}")

# CUDA sources compile only when the torch we build against has CUDA.
set(SWAMP_WITH_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR CUDA_FOUND)
  set(SWAMP_WITH_CUDA ON)
endif()
