"""Runs sharing a device take turns step by step; the app computes a shared run once."""

import threading
import time

import numpy as np
import pytest

import golddiff
from golddiff.core import device_sharing, device_turn, set_stop_check


def test_turns_on_one_device_never_overlap_and_other_devices_do_not_wait():
    inside, overlaps, lock = [], [], threading.Lock()

    def work(device):
        for _ in range(5):
            with device_turn(device):
                with lock:
                    inside.append(device)
                    overlaps.append(inside.count(device))
                time.sleep(0.005)
                with lock:
                    inside.remove(device)

    threads = [threading.Thread(target=work, args=(d,)) for d in ("cuda:0", "cuda:0", "cuda:0")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1  # "cuda:0" is a lock whether or not a GPU is here
    assert device_sharing("cuda:0") == 0
    with device_turn("cuda:0"):
        with device_turn("cuda:0"):  # re-entrant in one thread
            assert device_sharing("cuda:0") == 2
        done = []

        def other():
            with device_turn("cuda:1"):
                done.append(1)

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=5)
        assert done  # another device's turn is free


def test_a_waiting_run_stops_when_its_stop_check_fires():
    class Gone(Exception):
        pass

    seen = []

    def waiter():
        set_stop_check(lambda: (_ for _ in ()).throw(Gone()))
        try:
            with device_turn("cuda:3"):
                seen.append("entered")
        except Gone:
            seen.append("stopped")
        finally:
            set_stop_check(None)

    with device_turn("cuda:3"):
        t = threading.Thread(target=waiter)
        t.start()
        t.join(timeout=5)
    assert seen == ["stopped"] and device_sharing("cuda:3") == 0


def test_concurrent_runs_give_the_samples_each_gives_alone():
    ds = golddiff.load_dataset("digits").subset(400, 0)
    den = golddiff.make_denoiser("golddiff", ds, device="cpu")
    alone = [golddiff.sample(den, steps=4, n=2, seed=s).samples for s in (0, 1)]
    got = {}

    def run(s):
        got[s] = golddiff.sample(den, steps=4, n=2, seed=s).samples

    threads = [threading.Thread(target=run, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (0, 1):
        np.testing.assert_array_equal(got[s], alone[s])


def test_run_store_computes_a_config_once_for_sessions_asking_together():
    runs = pytest.importorskip("app_pages.runs")
    store = runs.RunStore(kept=4)
    calls, results = [], []
    gate = threading.Event()

    def make():
        calls.append(1)
        gate.wait(5)  # the others arrive while this one computes
        return object()

    threads = [threading.Thread(target=lambda: results.append(store.once("cfg", make)))
               for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(timeout=10)
    assert len(calls) == 1 and len(results) == 3 and len({id(r) for r in results}) == 1
    assert store.once("other", lambda: "b") == "b" and not store._making
