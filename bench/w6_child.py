"""W6's measuring child: open a store, time the operations, print one JSON line with its RSS."""

import json
import random
import resource
import statistics
import sys
import time


def main(data_dir: str, keys_file: str, samples: int) -> None:
    start = time.perf_counter()
    from backend.config import Config, with_values
    from backend.engine import Engine
    from backend.store import SQLiteStore
    imported = time.perf_counter()
    config = with_values(Config(), {"security.argon2_memory_kib": 8, "security.argon2_time_cost": 1,
                                    "security.argon2_parallelism": 1})
    store = SQLiteStore(data_dir)
    engine = Engine(store, config)
    admin = engine.trusted_session("admin")
    opened = time.perf_counter()

    with store.read():
        users = store.user_count()
    rng = random.Random(7)
    acl = []
    for _ in range(samples):
        line = f".kg acl check kg{rng.randint(1, 100)} user{rng.randint(1, users - 1)}"
        t = time.perf_counter()
        engine.execute(admin, line)
        acl.append(time.perf_counter() - t)
    keys = open(keys_file).read().split()
    auth = []
    for _ in range(min(samples, 300)):
        key = rng.choice(keys)
        t = time.perf_counter()
        engine.authenticate(key, source="local")
        auth.append(time.perf_counter() - t)
    listing = []
    for _ in range(3):
        t = time.perf_counter()
        result = engine.execute(admin, ".user list")
        listing.append(time.perf_counter() - t)
    assert len(result.rows) == users
    store.close()
    print(json.dumps({"users": users, "import_ms": (imported - start) * 1000, "open_ms": (opened - imported) * 1000,
                      "acl_check_us": statistics.median(acl) * 1e6,
                      "acl_check_p99_us": sorted(acl)[int(len(acl) * .99)] * 1e6,
                      "apikey_auth_us": statistics.median(auth) * 1e6,
                      "apikey_auth_p99_us": sorted(auth)[int(len(auth) * .99)] * 1e6,
                      "user_list_ms": statistics.median(listing) * 1000, "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space made at exec;
    ru_maxrss is not used first because Linux carries the parent's high-water mark across
    fork+exec, so a child of a large parent would report the parent's figure."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
