# ctest script (tests/CMakeLists.txt): compiles one Hopper AWQ GEMM file for sm_90a with ptxas'
# report (-Xptxas -v) and fails if ptxas serialized its wgmma. ptxas reports that only as an
# info line ("C7513 ... wgmma.mma_async instructions are serialized"), not as a warning, and the
# kernel stays correct but loses the overlap of its dequantization with the tensor cores: a
# 128-byte larger kernel parameter struct did that to every Hopper kernel once (docs/PERF.md,
# run 108), unnoticed by any test.
# Usage: cmake -DNVCC=... -DROOT=<source dir> -DSRC=kernels/awq_gemm_sm90_w64.cu -P this_file
execute_process(
  COMMAND ${NVCC} -I${ROOT} -DAWQD_HAS_CUDA=1 -O3 -DNDEBUG -std=c++17 --expt-relaxed-constexpr
          -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -c ${ROOT}/${SRC} -o /dev/null
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nvcc failed on ${SRC} (${rc}):\n${out}")
endif()
if(out MATCHES "C7513|mma_async instructions are serialized")
  message(FATAL_ERROR "ptxas serialized the wgmma of ${SRC}:\n${out}")
endif()
string(REGEX MATCHALL "Used [0-9]+ registers" regs "${out}")
message(STATUS "${SRC}: wgmma pipelined (${regs})")
