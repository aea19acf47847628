# Exported CMake package: find_package(swamp_core) then link swamp::core.
include(CMakePackageConfigHelpers)
install(EXPORT swamp_coreTargets NAMESPACE swamp:: DESTINATION "${SWAMP_INSTALL_CMAKEDIR}")
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/swamp_coreConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/swamp_coreConfig.cmake"
  INSTALL_DESTINATION "${SWAMP_INSTALL_CMAKEDIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/swamp_coreConfigVersion.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/swamp_coreConfig.cmake"
  "${PROJECT_BINARY_DIR}/swamp_coreConfigVersion.cmake"
  DESTINATION "${SWAMP_INSTALL_CMAKEDIR}")
