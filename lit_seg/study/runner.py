"""Runs cost measurements (:func:`lit_seg.study.harness.measure`) in fresh processes.

Used by ``lit-seg bench`` and ``lit-seg ablate``. A fresh process per measurement gives
every one a clean allocator and OpenMP state, which the CPU peak-memory numbers need.
"""

import multiprocessing as mp
import os
import time

from lit_seg.study import harness


class Runner:
    """Runs ``harness.measure(spec)`` in a fresh process per call (or in this process)."""

    def __init__(self, fresh_process: bool = True, timeout: float = 900.0) -> None:
        self.fresh_process = fresh_process
        self.timeout = timeout
        if fresh_process:
            # The fork server imports torch, lit_seg and the seeds once and never computes
            # anything, so every measurement process starts with a clean allocator and no
            # OpenMP state, without paying the imports again.
            self.ctx = mp.get_context("forkserver")
            self.ctx.set_forkserver_preload(["lit_seg.study.harness"])

    def __call__(self, spec: dict) -> dict:
        load = os.getloadavg()[0]
        start = time.monotonic()
        if not self.fresh_process:
            import torch

            threads = torch.get_num_threads()
            try:
                result = harness.measure(spec)
            except Exception as error:  # noqa: BLE001 (reported in the table)
                result = {"error": f"{type(error).__name__}: {error}"[:500]}
            finally:  # the measurement's global settings, back to this process's (torch's defaults)
                torch.set_num_threads(threads)
                torch.set_flush_denormal(False)
        else:
            receiver, sender = self.ctx.Pipe(duplex=False)
            process = self.ctx.Process(target=harness.child_main, args=(spec, sender))
            process.start()
            sender.close()
            if receiver.poll(self.timeout):
                try:
                    result = receiver.recv()
                except EOFError:
                    result = None
            else:
                process.kill()
                result = {"error": f"timeout after {self.timeout:.0f} s"}
            process.join()
            if result is None:
                result = {"error": f"measurement process died (exit code {process.exitcode}; -9: out of memory?)"}
        result["load1"] = round(load, 2)
        result["wall_s"] = round(time.monotonic() - start, 1)
        return result
