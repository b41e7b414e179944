from .selective_scan import (
    CPU_RECURRENCES, DEFAULT_CHUNK_SIZE, SCAN_BACKENDS, auto_chunk_size, autocast_off, cpu_recurrence,
    cuda_kernel_available, get_scan_backend, resolve_scan_backend, scan_backend, selective_scan_fn, selective_scan_ref,
    set_scan_backend,
)
