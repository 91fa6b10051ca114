// Opens a region whose functions (templates included) are compiled for an extended x86 ISA without
// compiling the whole translation unit with -m flags; MS_TARGET_END closes it. Headers with inline
// functions must be included before the region, so their one definition stays baseline code.
#pragma once

#define MS_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define MS_TARGET_BEGIN(isa) MS_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define MS_TARGET_END MS_PRAGMA(clang attribute pop)
#elif defined(__GNUC__)
#define MS_TARGET_BEGIN(isa) MS_PRAGMA(GCC push_options) MS_PRAGMA(GCC target(isa))
#define MS_TARGET_END MS_PRAGMA(GCC pop_options)
#endif
