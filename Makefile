# Entry points of walship's development tasks; each one runs an npm script or .ci/run.

.PHONY: help build test docs-check demo bench soak clean ci

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

build: ## Compile TypeScript to dist/
	npm run build

test: ## Build and run the whole test suite
	npm test

docs-check: ## Run every walship command of README.md and docs/ against s3rver
	npm run build && node --test dist/test/docs.test.js

demo: ## Replicate Northwind and Chinook, restore them and compare (./demo-run)
	npm run demo

bench: ## Run the benchmark against s3rver, or S3_ENDPOINT (bench/RESULTS.md)
	npm run bench

soak: ## Run the crash test with many more SIGKILL rounds (SOAK=1)
	npm run build && SOAK=1 node --test dist/test/crash.test.js

clean: ## Delete dist/ and demo-run/
	rm -rf dist demo-run

ci: ## Run .ci/run: npm ci, then npm test
	bash .ci/run
