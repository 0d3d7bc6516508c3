# Conveniences; the README's two commands are scripts/demo.sh and scripts/test.sh.
.PHONY: bench test demo
bench: ## run the benchmark pairs at full scale; writes bench/results.md and bench/*.svg
	./scripts/setup.sh
	go run ./bench/cmd/report
test:
	./scripts/test.sh
demo:
	./scripts/demo.sh
