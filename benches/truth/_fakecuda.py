"""A fake CUDA *runtime* so that fake CUDA tensors can run backward on a machine without a GPU.

``FakeTensorMode`` happily creates ``device="cuda"`` tensors without a GPU, and the forward
pass runs, but the autograd engine asks the CUDA runtime about the device (stream state,
primary context) and fails with ``hasPrimaryContext expects a valid device index``
(pytorch/pytorch#92627). We interpose a handful of CUDA runtime calls with ``LD_PRELOAD``
(device count 1, an H100-like ``cudaDeviceProp``: sm_90, 132 SMs, 80 GB) and put a stub
``libcuda.so.1`` (driver API, needed by ``libcaffe2_nvrtc``) on ``LD_LIBRARY_PATH``.

No kernel ever runs: every tensor is a fake tensor. The device properties matter only
where PyTorch *chooses* something by hardware, notably the SDPA backend (with sm_90 and
bf16 inputs PyTorch 2.15 picks cuDNN attention; with fp32 inputs memory-efficient
attention), exactly as it would on an H100.

The shared libraries are compiled once with the system C compiler into a cache folder
(``$FORGE_TRUTH_CACHE`` or ``~/.cache/forge-advisor/fakecuda``). The CUDA headers come
from the ``nvidia`` CUDA 13 wheel and triton's bundled ``crt/`` headers, both installed
with torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

RUNTIME_SHIM = r"""
#include <string.h>
#include <cuda_runtime_api.h>
cudaError_t cudaGetDeviceCount(int *c){ *c = 1; return cudaSuccess; }
cudaError_t cudaDeviceGetStreamPriorityRange(int *lo, int *hi){ if(lo)*lo=0; if(hi)*hi=-5; return cudaSuccess; }
cudaError_t cudaGetDevice(int *d){ *d = 0; return cudaSuccess; }
cudaError_t cudaSetDevice(int d){ return cudaSuccess; }
static void fill(struct cudaDeviceProp *p){
  memset(p, 0, sizeof(*p));
  strcpy(p->name, "NVIDIA H100 80GB HBM3 (fake)");
  p->major = 9; p->minor = 0; p->totalGlobalMem = 85045870592ULL; p->multiProcessorCount = 132;
  p->warpSize = 32; p->maxThreadsPerBlock = 1024; p->maxThreadsPerMultiProcessor = 2048;
  p->sharedMemPerBlock = 49152; p->sharedMemPerBlockOptin = 232448; p->sharedMemPerMultiprocessor = 233472;
  p->regsPerBlock = 65536; p->regsPerMultiprocessor = 65536; p->l2CacheSize = 52428800; p->memoryBusWidth = 5120;
  p->maxThreadsDim[0]=1024; p->maxThreadsDim[1]=1024; p->maxThreadsDim[2]=64;
  p->maxGridSize[0]=2147483647; p->maxGridSize[1]=65535; p->maxGridSize[2]=65535;
  p->totalConstMem = 65536; p->concurrentKernels = 1;
}
cudaError_t cudaGetDeviceProperties_v2(struct cudaDeviceProp *p, int d){ fill(p); return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d){ fill(p); return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v){ *v = 13000; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d){
  switch(a){ case cudaDevAttrComputeCapabilityMajor: *v=9; break; case cudaDevAttrComputeCapabilityMinor: *v=0; break;
  case cudaDevAttrMultiProcessorCount: *v=132; break; case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v=232448; break;
  default: *v=0; } return cudaSuccess; }
cudaError_t cudaDeviceCanAccessPeer(int *c, int a, int b){ *c=0; return cudaSuccess; }
cudaError_t cudaGetLastError(void){ return cudaSuccess; }
cudaError_t cudaPeekAtLastError(void){ return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t){ *f=85045870592ULL; *t=85045870592ULL; return cudaSuccess; }
cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *st){ *st = cudaStreamCaptureStatusNone; return cudaSuccess; }
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t s, enum cudaStreamCaptureStatus *st, unsigned long long *id, cudaGraph_t *g,
    const cudaGraphNode_t **deps, const cudaGraphEdgeData **ed, size_t *n){
  if(st)*st = cudaStreamCaptureStatusNone; if(id)*id=0; if(n)*n=0; return cudaSuccess; }
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *m){ return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void){ return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s){ return cudaSuccess; }
/* streams and events for FSDP2's side streams (benches/truth/fsdp2.py): handles only */
static char fake_handles[4096]; static int next_handle = 1;
static void *new_handle(void){ return &fake_handles[(next_handle++) % 4096]; }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int f, int p){ *s = (cudaStream_t)new_handle(); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int f){ *s = (cudaStream_t)new_handle(); return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s){ *s = (cudaStream_t)new_handle(); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s){ return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t s){ return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int f){ return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int f){ *e = (cudaEvent_t)new_handle(); return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t *e){ *e = (cudaEvent_t)new_handle(); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s){ return cudaSuccess; }
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned int f){ return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t e){ return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t e){ return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e){ return cudaSuccess; }
"""

DRIVER_STUB = r"""
typedef int CUresult;
CUresult cuDevicePrimaryCtxGetState(int dev, unsigned int *flags, int *active){ if(flags)*flags=0; if(active)*active=1; return 0; }
#define STUB(n) CUresult n(){ return 0; }
STUB(cuCtxGetCurrent) STUB(cuCtxSetCurrent) STUB(cuDeviceGet) STUB(cuDeviceGetAttribute) STUB(cuDevicePrimaryCtxRetain)
STUB(cuFuncGetAttribute) STUB(cuFuncSetAttribute) STUB(cuFuncSetCacheConfig) STUB(cuLaunchCooperativeKernel) STUB(cuLaunchKernel)
STUB(cuLinkAddData_v2) STUB(cuLinkComplete) STUB(cuLinkCreate_v2) STUB(cuModuleGetFunction) STUB(cuModuleLoad) STUB(cuModuleLoadData)
STUB(cuModuleLoadDataEx) STUB(cuModuleUnload) STUB(cuOccupancyMaxActiveBlocksPerMultiprocessor) STUB(cuPointerGetAttribute)
STUB(cuTensorMapEncodeTiled)
CUresult cuGetErrorString(int e, const char **s){ if(s)*s="fake libcuda"; return 0; }
"""


def _include_dirs() -> list[str]:
    site = Path(sysconfig.get_paths()["purelib"])
    dirs = [site / "nvidia" / "cu13" / "include", site / "triton" / "backends" / "nvidia" / "include"]
    found = [str(d) for d in dirs if (d / "cuda_runtime_api.h").exists() or (d / "crt" / "host_defines.h").exists()]
    if not any(Path(d, "cuda_runtime_api.h").exists() for d in found):
        raise RuntimeError("fake CUDA: cuda_runtime_api.h not found (expected the nvidia CUDA 13 wheel that torch installs)")
    return found


def build(cache: str | os.PathLike | None = None) -> dict[str, str]:
    """Compile the shims (once) and return the environment variables that activate them."""
    cache_dir = Path(cache or os.environ.get("FORGE_TRUTH_CACHE") or Path.home() / ".cache" / "forge-advisor" / "fakecuda")
    key = hashlib.sha256((RUNTIME_SHIM + DRIVER_STUB).encode()).hexdigest()[:12]
    out = cache_dir / key
    shim, drv = out / "libfakecudart.so", out / "lib" / "libcuda.so.1"
    if not (shim.exists() and drv.exists()):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("fake CUDA: no C compiler (cc/gcc) to build the runtime shim")
        (out / "lib").mkdir(parents=True, exist_ok=True)
        (out / "shim.c").write_text(RUNTIME_SHIM)
        (out / "libcuda.c").write_text(DRIVER_STUB)
        inc = [f"-I{d}" for d in _include_dirs()]
        tmp_shim, tmp_drv = shim.with_suffix(f".{os.getpid()}.tmp"), drv.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([cc, "-shared", "-fPIC", "-O2", *inc, "-o", str(tmp_shim), str(out / "shim.c")], check=True)
        subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(tmp_drv), str(out / "libcuda.c")],
            check=True,
        )
        os.replace(tmp_shim, shim)
        os.replace(tmp_drv, drv)
    ld_path = os.environ.get("LD_LIBRARY_PATH", "")
    preload = os.environ.get("LD_PRELOAD", "")
    return {
        "LD_PRELOAD": f"{shim}:{preload}" if preload else str(shim),
        "LD_LIBRARY_PATH": f"{drv.parent}:{ld_path}" if ld_path else str(drv.parent),
        "FORGE_FAKE_CUDA": "1",
    }
