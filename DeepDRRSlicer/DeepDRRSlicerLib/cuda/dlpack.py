"""DLPack export for device buffers that have no ``__dlpack__`` of their own (pycuda's GPUArray).

A DLPack capsule (``PyCapsule`` named "dltensor" holding a ``DLManagedTensor``) lets torch, CuPy, JAX
and numpy take an array without a copy (``torch.from_dlpack(x)``). CuPy arrays have their own; this
module builds one with ctypes for any (pointer, shape, dtype, device) and keeps the owning object
alive until the consumer calls the tensor's deleter (or the capsule is dropped unconsumed).
It works for host memory too, which is how CI tests it (``numpy.from_dlpack``).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

__all__ = ["CPU", "CUDA", "dlpack_capsule"]

CPU = 1    # kDLCPU
CUDA = 2   # kDLCUDA

_DTYPE_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}   # kDLInt, kDLUInt, kDLFloat, kDLBool


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int), ("dtype", _DataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _ManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_ManagedTensor))
_ManagedTensor._fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]

_CAPSULE_NAME = b"dltensor"
_CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

_pythonapi = ctypes.pythonapi
_pythonapi.PyCapsule_New.restype = ctypes.py_object
_pythonapi.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _CAPSULE_DESTRUCTOR]
_pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
_pythonapi.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
_pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

# address of a DLManagedTensor -> what must stay alive until its deleter runs
_alive: dict = {}
_lock = threading.Lock()


@_DELETER
def _delete(managed):
    with _lock:
        _alive.pop(ctypes.addressof(managed.contents), None)


@_CAPSULE_DESTRUCTOR
def _destroy_capsule(capsule):
    # still named "dltensor": nobody consumed it, so the tensor is still ours to delete
    if _pythonapi.PyCapsule_IsValid(capsule, _CAPSULE_NAME):
        address = _pythonapi.PyCapsule_GetPointer(capsule, _CAPSULE_NAME)
        with _lock:
            _alive.pop(address, None)


def dlpack_capsule(pointer: int, shape, dtype, device_type: int, device_id: int, owner):
    """A "dltensor" capsule for the C-contiguous array at ``pointer``; ``owner`` is kept alive meanwhile."""
    dtype = np.dtype(dtype)
    if dtype.kind not in _DTYPE_CODES:
        raise TypeError(f"DLPack export of {dtype} is not supported")
    managed = _ManagedTensor()
    shape_array = (ctypes.c_int64 * max(1, len(shape)))(*[int(n) for n in shape])
    managed.dl_tensor.data = ctypes.c_void_p(int(pointer))
    managed.dl_tensor.device = _Device(device_type, int(device_id))
    managed.dl_tensor.ndim = len(shape)
    managed.dl_tensor.dtype = _DataType(_DTYPE_CODES[dtype.kind], dtype.itemsize * 8, 1)
    managed.dl_tensor.shape = ctypes.cast(shape_array, ctypes.POINTER(ctypes.c_int64))
    managed.dl_tensor.strides = None   # C-contiguous
    managed.dl_tensor.byte_offset = 0
    managed.manager_ctx = None
    managed.deleter = _delete
    address = ctypes.addressof(managed)
    with _lock:
        _alive[address] = (managed, shape_array, owner)
    return _pythonapi.PyCapsule_New(address, _CAPSULE_NAME, _destroy_capsule)


def live_exports() -> int:
    """How many exported tensors are still held (for tests: each is released exactly once)."""
    with _lock:
        return len(_alive)
