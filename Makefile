.PHONY: demo test test-quick bench setup clean

demo:
	bash ci/demo.sh

test:
	bash ci/test.sh

test-quick:
	bash ci/test.sh -m "not slow"

setup:
	bash ci/setup.sh

bench: setup
	.venv/bin/python -m bench gemm

clean:
	rm -rf .venv build *.egg-info .pytest_cache .hypothesis .cgen-cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
