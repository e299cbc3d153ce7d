# sparge_spec: experiment specs (YAML loading, include:, schema validation, overrides, sweeps, canonical YAML) and
# its test. Included from runner/CMakeLists.txt; needs the targets sparge_warnings and yaml-cpp and the function
# sparge_add_test from the top-level CMakeLists.txt. No torch.
find_package(yaml-cpp REQUIRED)

add_library(sparge_spec STATIC ${CMAKE_CURRENT_LIST_DIR}/spec.cpp)
target_include_directories(sparge_spec PUBLIC ${CMAKE_CURRENT_LIST_DIR} ${CMAKE_CURRENT_LIST_DIR}/../sparge_core/include)
target_link_libraries(sparge_spec PUBLIC yaml-cpp PRIVATE sparge_warnings)

sparge_add_test(test_spec SOURCES ${CMAKE_CURRENT_LIST_DIR}/tests/test_spec.cpp LIBS sparge_spec LABELS runner)
target_compile_definitions(test_spec PRIVATE SPARGE_SPEC_TEST_DATA="${CMAKE_CURRENT_LIST_DIR}/tests/data")
