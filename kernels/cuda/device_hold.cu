// Holds a stream until the host says go: the profiler's layer events then time the
// device's work alone (kernels/gpu/device_hold.py).
//
// One thread polls a word of pinned host memory (mapped: unified addressing) and
// returns once the host has written a non-zero value there, or once max_ns of the
// device's global timer have passed; then it writes 1 into the second word, so the
// host can tell a hold that expired (a layer synchronised the host inside the loop,
// and the later layers ran as they were launched) from one that was released.

extern "C" __global__ void hold_until_released(unsigned long long flag_addr,
                                               unsigned long long max_ns) {
    volatile unsigned int* flag = reinterpret_cast<volatile unsigned int*>(flag_addr);
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    while (flag[0] == 0u) {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 > max_ns) {
            flag[1] = 1u;
            return;
        }
        __nanosleep(2000);
    }
}
