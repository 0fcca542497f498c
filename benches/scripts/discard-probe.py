#!/usr/bin/env python3
# The log-sync probe behind BENCHMARKS.md's "Discards" paragraph: one thread appends
# 150 B records with pwrite + fdatasync to a preallocated, zero-filled 256 MiB file for
# SECONDS and reports sync latency (p50, p99.9, max, syncs over 10 ms with their times);
# another thread, every 3 s, writes a 64 MiB file (fdatasync every 4 MiB) and then,
# by MODE, keeps the previous one (keep), unlinks it (delete), or shrinks it in steps
# before the unlink (steps<MiB>_<pause ms>, e.g. steps4_1), or does nothing (none).
#
#   python3 benches/scripts/discard-probe.py /path/on/the/disk/probe 40 delete
#
# Bounded by SECONDS; removes every file it made under PATH's directory with PATH's
# name in it.
import os, time, sys, threading
path = sys.argv[1]; secs = float(sys.argv[2]); mode = sys.argv[3]  # mode: none|keep|delete|truncsteps
rec = b"x" * 150
stop = False
def background():
    i = 0; prev = None
    blob = b"y" * (1 << 20)
    while not stop:
        if mode != "none":
            name = f"{path}.bg{i}"
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.posix_fallocate(fd, 0, 64 << 20)
            for k in range(64):
                os.pwrite(fd, blob, k << 20)
                if k % 4 == 3: os.fdatasync(fd)
            os.fsync(fd); os.close(fd)
            if prev:
                if mode == "delete":
                    os.unlink(prev)
                elif mode.startswith("steps"):
                    # steps<MiB>_<sleep ms>
                    mib, pause = mode[5:].split("_")
                    fd = os.open(prev, os.O_RDWR)
                    size = 64 << 20
                    while size > 0:
                        size = max(0, size - (int(mib) << 20))
                        os.ftruncate(fd, size); time.sleep(int(pause) / 1000)
                    os.close(fd); os.unlink(prev)
                elif mode == "truncsteps":
                    fd = os.open(prev, os.O_RDWR)
                    size = 64 << 20
                    while size > 0:
                        size -= 4 << 20
                        os.ftruncate(fd, size); os.fdatasync(fd); time.sleep(0.05)
                    os.close(fd); os.unlink(prev)
            prev = name; i += 1
        time.sleep(3)
t = threading.Thread(target=background); t.start()
fd = os.open(f"{path}.log", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
size = 256 << 20
os.posix_fallocate(fd, 0, size); os.pwrite(fd, b"\0" * size, 0); os.fsync(fd)
lat = []; slow = []; end = time.time() + secs; off = 0; t0 = time.time()
while time.time() < end:
    t1 = time.perf_counter()
    os.pwrite(fd, rec, off); os.fdatasync(fd)
    d = (time.perf_counter() - t1) * 1000
    lat.append(d); off = (off + 150) % (size - 200)
    if d > 10: slow.append((round(time.time() - t0, 2), round(d, 1)))
stop = True; t.join()
lat.sort(); n = len(lat)
print(f"mode={mode} n={n} p50={lat[n//2]:.3f} p99.9={lat[int(n*.999)]:.3f} max={lat[-1]:.1f} count>10ms={len(slow)} {slow[:15]}")
for f in os.listdir(os.path.dirname(path)):
    if os.path.basename(path) in f: os.unlink(os.path.join(os.path.dirname(path), f))
