# hsflowd in Python.  `make install` as root sets up the agent; `make test` runs every test.
PYTHON ?= python3
VENV_PY = .venv/bin/python

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' hsflowd/__init__.py)
# rpmbuild checks BuildRequires against the rpm database, which is empty on Debian
RPMBUILD_FLAGS ?= $(if $(wildcard /etc/debian_version),--nodeps)

.PHONY: install deps test bench clean deb rpm

install:
	sh packaging/install.sh

deps:
	sh .ci/deps

# the tests on TEST_WORKERS processes (pytest-xdist): which tests share one is tests/parallel.py's
TEST_WORKERS ?= 2

test: deps
	$(VENV_PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder tests

bench: deps
	for b in bench/bench_*.py; do echo "== $$b"; $(VENV_PY) $$b || exit 1; done

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Packages are built in a copy of the tree under build/ (what git knows of: tracked and new
# files, not ignored ones; the whole tree outside a git checkout); they land in dist/.
define copy-tree
	rm -rf $(1) && mkdir -p $(1)
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null; \
	else \
	    tar --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
	        --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
	        --exclude=.hypothesis -cf - .; \
	fi | tar -C $(1) -xf -
endef

# make deb: dist/hsflowd_VERSION_all.deb.  Needs: apt-get install debhelper dh-python
# pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel
# golang-github-containerd-containerd-dev protobuf-compiler (the last two: containerd's API
# description, for containerd {} and k8s {}; dpkg-buildpackage names any that is missing)
# By hand, in a checkout: ln -s packaging/debian debian && dpkg-buildpackage -us -uc -b (the
# .deb lands in ..; debian/rules clean removes what the build left in packaging/debian)
deb:
	rm -rf build/deb
	$(call copy-tree,build/deb/hsflowd-$(VERSION))
	cp -r packaging/debian build/deb/hsflowd-$(VERSION)/debian
	cd build/deb/hsflowd-$(VERSION) && dpkg-buildpackage -us -uc -b
	mkdir -p dist && rm -f dist/hsflowd_*.deb
	cp build/deb/hsflowd_*_all.deb dist/
	@ls dist/hsflowd_*.deb

# make rpm: dist/hsflowd-VERSION-1.noarch.rpm.  Needs rpmbuild (apt-get install rpm on Debian).
# Without containerd's .proto files and protoc on the build host the rpm has no description
# of containerd's API: containerd {} and k8s {} then say so and report nothing (the spec).
rpm:
	rm -rf build/rpm
	$(call copy-tree,build/rpm/hsflowd-$(VERSION))
	mkdir -p build/rpm/SOURCES
	tar -C build/rpm -czf build/rpm/SOURCES/hsflowd-$(VERSION).tar.gz hsflowd-$(VERSION)
	rpmbuild --define "_topdir $(CURDIR)/build/rpm" $(RPMBUILD_FLAGS) -bb packaging/rpm/hsflowd.spec
	mkdir -p dist && rm -f dist/hsflowd-*.noarch.rpm
	cp build/rpm/RPMS/noarch/hsflowd-$(VERSION)-*.noarch.rpm dist/
	@ls dist/hsflowd-*.noarch.rpm
