/**
 * What each name a pickle's GLOBAL or STACK_GLOBAL opcode refers to means here. Nothing is imported or
 * called: torch's tensor machinery (rebuild functions, storage classes, dtypes, OrderedDict, torch.Size)
 * is recognised by name and turned into data; everything else is recorded, and named in a warning —
 * apart from names torch.load would call to run code, which get a warning of their own.
 *
 * Decided once per GLOBAL: torch memoizes each global and reuses it with BINGET.
 */
import type { DType } from '../dtype';

export type GlobalMeaning =
  /** collections.OrderedDict & co: calling one makes an empty dict (items come through SETITEMS). */
  | { readonly kind: 'dict' }
  /** torch.Size(tuple): the tuple. */
  | { readonly kind: 'size' }
  /** torch._utils._rebuild_tensor(_v2, _v3): a dense tensor over a storage. */
  | { readonly kind: 'rebuild'; readonly version: 1 | 2 | 3 }
  /** _rebuild_parameter(data, …): the tensor `data`. */
  | { readonly kind: 'parameter' }
  /** torch._tensor._rebuild_from_type_v2(func, type, args, state): func(*args). */
  | { readonly kind: 'fromType' }
  /** A tensor rebuild model-stock cannot read in place (quantized, sparse, …). */
  | { readonly kind: 'unreadable'; readonly what: string }
  | { readonly kind: 'storage'; readonly dtype: DType | undefined }
  | { readonly kind: 'dtype'; readonly dtype: DType | undefined }
  /** Harmless parts of torch's own vocabulary (torch.device, layouts, Parameter as a type). */
  | { readonly kind: 'torch' }
  /** A callable torch.load would run that executes code or commands, or reaches files, processes, the network. */
  | { readonly kind: 'dangerous' }
  /** Anything else: a class or function of some library, recorded and never created. */
  | { readonly kind: 'foreign' };

/** torch.<X>Storage → element type; undefined: a storage type model-stock cannot read. */
const STORAGES: Record<string, DType | undefined> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
  ComplexFloatStorage: 'C64',
  ComplexDoubleStorage: undefined,
  QInt8Storage: undefined,
  QUInt8Storage: undefined,
  QInt32Storage: undefined,
  QUInt4x2Storage: undefined,
  QUInt2x4Storage: undefined,
  // Bytes; _rebuild_tensor_v3 says which dtype they hold.
  UntypedStorage: 'U8',
};

/** torch.<dtype> → element type (the names _rebuild_tensor_v3 and pickled dtypes use). */
const DTYPES: Record<string, DType | undefined> = {
  float32: 'F32',
  float: 'F32',
  float64: 'F64',
  double: 'F64',
  float16: 'F16',
  half: 'F16',
  bfloat16: 'BF16',
  int64: 'I64',
  long: 'I64',
  int32: 'I32',
  int: 'I32',
  int16: 'I16',
  short: 'I16',
  int8: 'I8',
  uint8: 'U8',
  uint16: 'U16',
  uint32: 'U32',
  uint64: 'U64',
  bool: 'BOOL',
  complex64: 'C64',
  cfloat: 'C64',
  float8_e4m3fn: 'F8_E4M3',
  float8_e5m2: 'F8_E5M2',
  float8_e8m0fnu: 'F8_E8M0',
  complex128: undefined,
  cdouble: undefined,
  float8_e4m3fnuz: undefined,
  float8_e5m2fnuz: undefined,
};

const UNREADABLE: Record<string, string> = {
  _rebuild_qtensor: 'a quantized tensor',
  _rebuild_sparse_tensor: 'a sparse tensor',
  _rebuild_sparse_csr: 'a sparse tensor',
  _rebuild_meta_tensor_no_storage: 'a meta tensor (no data)',
  _rebuild_nested_tensor: 'a nested tensor',
  _rebuild_wrapper_subclass: 'a tensor subclass without storage',
  _rebuild_device_tensor_from_numpy: 'a device tensor saved as numpy data',
  _rebuild_xla_tensor: 'an XLA tensor',
  _rebuild_mlc_tensor: 'an MLC tensor',
};

const TORCH_VOCABULARY = new Set([
  'torch.Tensor',
  'torch.device',
  'torch.strided',
  'torch.sparse_coo',
  'torch.sparse_csr',
  'torch.sparse_csc',
  'torch.sparse_bsr',
  'torch.sparse_bsc',
  'torch.per_tensor_affine',
  'torch.per_channel_affine',
  'torch.serialization._get_layout',
  'torch.nn.parameter.Parameter',
  'torch.storage.TypedStorage',
  'torch._utils._set_obj_state',
]);

const DICTS = new Set(['collections.OrderedDict', 'builtins.dict', 'collections.defaultdict']);

/**
 * Modules any of whose callables can run code, commands or other pickles, or reach files, processes or
 * the network when torch.load calls them (the names exploits use, after picklescan and fickling).
 */
const DANGEROUS_MODULES = [
  'os',
  'posix',
  'nt',
  'subprocess',
  'runpy',
  'importlib',
  'sys',
  'shutil',
  'socket',
  'pty',
  'ctypes',
  'code',
  'codeop',
  'commands',
  'webbrowser',
  'pickle',
  '_pickle',
  'cPickle',
  'dill',
  'marshal',
  'multiprocessing',
  'asyncio',
  'timeit',
  'pdb',
  'bdb',
  'profile',
  'cProfile',
  'trace',
  'types',
  'urllib',
  'http',
  'requests',
  'ftplib',
  'smtplib',
  'telnetlib',
  'pydoc',
  'torch.hub',
  'torch.jit',
  'torch.utils.cpp_extension',
  '_posixsubprocess',
  'pip',
  'numpy.testing',
];

/** Single names that run code, or reach any attribute (and from there anything), when called. */
const DANGEROUS_NAMES = new Set([
  'builtins.eval',
  'builtins.exec',
  'builtins.execfile',
  'builtins.compile',
  'builtins.getattr',
  'builtins.setattr',
  'builtins.delattr',
  'builtins.__import__',
  'builtins.open',
  'builtins.input',
  'builtins.breakpoint',
  'builtins.globals',
  'builtins.locals',
  'builtins.vars',
  'operator.attrgetter',
  'operator.methodcaller',
  'functools.partial',
  'torch.load',
  'torch.serialization.load',
  'numpy.load',
  'numpy.lib.npyio.load',
]);

/**
 * Python 2 names that Python 3's unpickler (torch.load's) renames for pickles of protocol < 3
 * (_compat_pickle's IMPORT_MAPPING and NAME_MAPPING, the part that matters here): `os.system` pickled by
 * protocol 2 reads `posix system`, `subprocess.check_output` reads `commands check_output`.
 */
const PYTHON2_MODULES: Record<string, string> = {
  __builtin__: 'builtins',
  exceptions: 'builtins',
  copy_reg: 'copyreg',
  commands: 'subprocess',
  cPickle: 'pickle',
  urllib2: 'urllib.request',
  urlparse: 'urllib.parse',
  httplib: 'http.client',
  SocketServer: 'socketserver',
  BaseHTTPServer: 'http.server',
  SimpleHTTPServer: 'http.server',
  CGIHTTPServer: 'http.server',
  xmlrpclib: 'xmlrpc.client',
  UserDict: 'collections',
  UserList: 'collections',
  UserString: 'collections',
  StringIO: 'io',
  cStringIO: 'io',
  thread: '_thread',
  Queue: 'queue',
};
const PYTHON2_NAMES: Record<string, string> = {
  '__builtin__.reduce': 'functools.reduce',
  '__builtin__.intern': 'sys.intern',
  '__builtin__.xrange': 'builtins.range',
  '__builtin__.unicode': 'builtins.str',
  '__builtin__.long': 'builtins.int',
  'UserDict.IterableUserDict': 'collections.UserDict',
};

/** The module and name torch.load (Python 3) would look up for a global of a pickle of `protocol`. */
export function python3Name(module: string, name: string, protocol: number): [string, string] {
  if (protocol >= 3) return [module, name];
  const renamed = PYTHON2_NAMES[`${module}.${name}`];
  if (renamed !== undefined) {
    const dot = renamed.lastIndexOf('.');
    return [renamed.slice(0, dot), renamed.slice(dot + 1)];
  }
  return [PYTHON2_MODULES[module] ?? module, name];
}

export function globalMeaning(module: string, name: string): GlobalMeaning {
  const mod = module;
  const qualified = `${mod}.${name}`;
  if (DANGEROUS_NAMES.has(qualified)) return { kind: 'dangerous' };
  if (DANGEROUS_MODULES.some((m) => mod === m || mod.startsWith(`${m}.`))) return { kind: 'dangerous' };
  if (DICTS.has(qualified)) return { kind: 'dict' };
  if (mod === 'torch' || mod === 'torch.cuda' || mod === 'torch.storage') {
    if (Object.prototype.hasOwnProperty.call(STORAGES, name))
      return { kind: 'storage', dtype: STORAGES[name] };
    if (mod === 'torch' && Object.prototype.hasOwnProperty.call(DTYPES, name))
      return { kind: 'dtype', dtype: DTYPES[name] };
    if (mod === 'torch' && name === 'Size') return { kind: 'size' };
  }
  if (mod === 'torch._utils') {
    if (name === '_rebuild_tensor') return { kind: 'rebuild', version: 1 };
    if (name === '_rebuild_tensor_v2') return { kind: 'rebuild', version: 2 };
    if (name === '_rebuild_tensor_v3') return { kind: 'rebuild', version: 3 };
    if (name === '_rebuild_parameter' || name === '_rebuild_parameter_with_state')
      return { kind: 'parameter' };
    const what = UNREADABLE[name];
    if (what !== undefined) return { kind: 'unreadable', what: `${what} (${qualified})` };
  }
  if (qualified === 'torch.nn.parameter._rebuild_parameter') return { kind: 'parameter' };
  if (qualified === 'torch._tensor._rebuild_from_type_v2') return { kind: 'fromType' };
  if (TORCH_VOCABULARY.has(qualified)) return { kind: 'torch' };
  return { kind: 'foreign' };
}
