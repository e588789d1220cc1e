"""Where arrays live and how they are computed: devices ("cpu" is NumPy, "cuda[:N]" is CuPy),
array functions the two lack, memory estimates, the CPU thread pool, the process tuning of
training, and the CPU and CUDA kernels (kernels/)."""
from .arrays import erf, index_add_rows, out_of_range, scatter_add
from .devices import (
                      CUPY_INSTALL_HINT,
                      array_module,
                      check_device,
                      cuda_available,
                      cupy,
                      device_index,
                      device_of,
                      get_default_device,
                      memory_text,
                      normalize_device,
                      peak_memory_bytes,
                      set_default_device,
                      to_device,
                      to_numpy,
                      xp_for,
)
from . import tuning
from .tuning import tune_for_training
