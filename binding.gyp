# The same CPU sources as CMakeLists.txt, for node-gyp users (`node-gyp rebuild` → build/Release).
# `npm run build:gyp` builds it out of the way of the cmake-js build, into build-gyp/model_stock.node.
{
  'targets': [
    {
      'target_name': 'model_stock',
      'sources': [
        'native/addon.cc',
        'native/cpu.cc',
        'native/dtype.cc',
        'native/fault_guard.cc',
        'native/fsops.cc',
        'native/io.cc',
        'native/job.cc',
        'native/kernels.cc',
        'native/kernels_avx2.cc',
        'native/kernels_avx512.cc',
        'native/kernels_scalar.cc',
        'native/lowrank.cc',
        'native/lowrank_job.cc',
        'native/memory.cc',
        'native/lock.cc',
        'native/pool.cc',
        'native/reader.cc',
        'native/runtime.cc',
        'native/workers.cc',
        'native/writer.cc',
        # CPU-only: the CUDA exports answer "not compiled in" (cmake-js builds the kernels, see README);
        # the emulation of the kernels' arithmetic is plain C++ and always built.
        'native/cuda/exports.cc',
        'native/cuda/emulate.cc',
      ],
      'include_dirs': [
        "<!(node -p \"require('path').resolve(require('node-addon-api').include_dir)\")",
      ],
      'defines': ['NAPI_VERSION=8', 'NAPI_CPP_EXCEPTIONS', 'NODE_ADDON_API_DISABLE_DEPRECATED'],
      # Node's common.gypi compiles without exceptions; node-addon-api's C++ exceptions need them.
      'cflags!': ['-fno-exceptions'],
      'cflags_cc!': ['-fno-exceptions'],
      # -ffp-contract=off: every ISA must round a·w0 + b·Σw_i the same way (see CMakeLists.txt).
      'cflags_cc': ['-fexceptions', '-O3', '-ffp-contract=off', '-fvisibility=hidden'],
      'xcode_settings': {
        'GCC_ENABLE_CPP_EXCEPTIONS': 'YES',
        'CLANG_CXX_LANGUAGE_STANDARD': 'c++17',
        'OTHER_CPLUSPLUSFLAGS': ['-ffp-contract=off'],
      },
    },
  ],
}
