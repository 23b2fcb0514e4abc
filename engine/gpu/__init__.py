"""The engine's GPU side: tactics (candidate kernels per layer), the timing
cache, and the device copies of layer weights. Imports CuPy lazily, so the
package imports anywhere; using it needs a CUDA device."""
