# The few commands worth remembering. `make test` is what CI runs (.ci/run).
PYTHON ?= .venv/bin/python

.PHONY: test lint bench bench-quick bench-scale

test:
	python3 dev.py test

lint: $(PYTHON)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/mypy bench

# Every benchmark; writes the results into BENCHMARKS.md. Needs wrk (apt-get install -y wrk)
# and pgbench; uses DATABASE_URL / REDIS_URL (default: the local servers; Redis db 15 is
# flushed). A few minutes: the 100,000-account sweeps dominate.
bench: $(PYTHON)
	$(PYTHON) -m bench.run

# The scale run: one database grown to 10k, 100k and 1M accounts; import rate, bytes per
# account, API p99, manual and scheduled sweeps at 100k and 1M, the claim plans. Private
# embedded PostgreSQL and Redis (unless DATABASE_URL/REDIS_URL). About 25 minutes on 2 cores.
bench-scale: $(PYTHON)
	$(PYTHON) -m bench.scale --quiet-wait 10

# Small sizes, short runs, nothing written: to see that the harness works.
bench-quick: $(PYTHON)
	$(PYTHON) -m bench.run --quick --no-write

$(PYTHON):
	python3 dev.py octopost --help > /dev/null
