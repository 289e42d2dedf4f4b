# Entry points of walship's development tasks; each one runs an npm script or .ci/run.

.PHONY: help build test demo bench soak clean ci

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-7s %s\n", $$1, $$2 }'

build: ## Compile TypeScript to dist/
	npm run build

test: ## Build and run the whole test suite
	npm test

demo: ## Replicate Northwind and Chinook, restore them and compare (./demo-run)
	npm run demo

bench: ## Run the benchmarks in bench/
	npm run bench

# TODO: run the long soak tests here once they exist; until then SOAK=1 has no effect on the suite.
soak: ## Run the test suite with SOAK=1
	SOAK=1 npm test

clean: ## Delete dist/ and demo-run/
	rm -rf dist demo-run

ci: ## Run .ci/run: npm ci, then npm test
	bash .ci/run
