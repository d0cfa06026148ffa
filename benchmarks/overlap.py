"""How much of the pipeline thread's time is scoring (+ publishing)? Decides whether a separate scoring thread could help.

    python -m benchmarks.overlap
"""
import os, sys, time
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tempfile
from adae_stream import save_detector
from adae_stream.stream.broker import EmbeddedBroker
from adae_stream.stream import app as appmod
from benchmarks.models import tabular, cifar
from benchmarks import e2e
busy = {"score": 0.0, "poll": 0.0, "ingest": 0.0}
orig_score = appmod.Pipeline._score
def _score(self, force):
    t = time.perf_counter(); orig_score(self, force); busy["score"] += time.perf_counter() - t
appmod.Pipeline._score = _score
orig_ingest = appmod.Pipeline._ingest
def _ingest(self, tp, rec):
    t = time.perf_counter(); orig_ingest(self, tp, rec); busy["ingest"] += time.perf_counter() - t
appmod.Pipeline._ingest = _ingest
from kafka import KafkaConsumer
op = KafkaConsumer.poll
def poll(self, *a, **k):
    t = time.perf_counter(); r = op(self, *a, **k); busy["poll"] += time.perf_counter() - t; return r
if __name__ == "__main__":
    for name, (det, x), fmt, per, n in [("cifar", cifar(), "npy", 32, 200), ("tabular", tabular(), "npy", 64, 2000)]:
        path = str(save_detector(det, tempfile.mkdtemp() + "/" + name))
        with EmbeddedBroker() as b:
            for k in busy: busy[k] = 0.0
            KafkaConsumer.poll = poll
            t0 = time.perf_counter()
            r = e2e.end_to_end(b.bootstrap, det, path, x, fmt, per, n)
            KafkaConsumer.poll = op
            print(name, fmt, f"{r['inst_per_s']:.0f} inst/s, wall {r['instances'] / r['inst_per_s']:.2f} s", {k: round(v, 2) for k, v in busy.items()}, "scoring+publish share of wall:",
                  f"{busy['score'] / (r['instances'] / r['inst_per_s']):.0%}", flush=True)
