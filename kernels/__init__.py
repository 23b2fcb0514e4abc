"""Kernels per layer family: NumPy references here, CUDA sources and CuPy
launchers under ``kernels.gpu``. A leaf package: imports neither engine nor
tf_integration; functions take arrays and plain parameters."""
