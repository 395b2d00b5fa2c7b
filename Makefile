# Convenience targets; the README's commands and .ci/run are the source of truth.
.PHONY: test race vet fuzz bench bench-compare soak

test:
	go test ./...

race:
	go test -race -short ./...

vet:
	gofmt -l $$(git ls-files '*.go')
	go vet ./...

# Short fuzzing of every decoder; FUZZTIME=10m for a longer run.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench:
	go test -run '^$$' -bench . -benchmem -benchtime 1x ./... 

# Compare benchmarks of the working tree with REF (default main) side by side.
REF ?= main
COUNT ?= 6
BENCH ?= .
bench-compare:
	./scripts/bench-compare.sh "$(REF)" "$(BENCH)" "$(COUNT)"

SOAK ?= 20m
soak:
	go test -tags soak -run Soak -timeout 0 ./reliability -soak.duration=$(SOAK) -v
