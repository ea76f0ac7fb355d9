# `nix flake check`: the test suite (with the brokers started inside the build), ruff, mypy,
# and the flake's evaluation tests. The nix tests themselves need `nix` and are left out of
# the sandboxed pytest run (they run in CI through .ci/run).
{
  pkgs,
  source,
  brokers,
  testVenv,
  gcc,
  evalFailures,
}:
let
  inSource = name: inputs: script: pkgs.runCommand name { nativeBuildInputs = [ testVenv ] ++ inputs; } ''
    cp -r ${source} source
    chmod -R u+w source
    cd source
    export HOME=$TMPDIR
    ${script}
    touch $out
  '';
in
{
  pytest = inSource "virtufin-pytest" [ brokers gcc pkgs.gnumake ] ''
    export VIRTUFIN_BROKERS_DIR=$TMPDIR/brokers
    virtufin-brokers start
    trap 'virtufin-brokers stop' EXIT
    python -m virtufin.proto.build
    make -s -C native
    python -m pytest -q -p no:cacheprovider --ignore=tests/integration/nix
  '';
  ruff = inSource "virtufin-ruff" [ ] ''
    ruff format --check --no-cache .
    ruff check --no-cache .
  '';
  mypy = inSource "virtufin-mypy" [ ] ''
    python -m virtufin.proto.build
    mypy --cache-dir "$TMPDIR/mypy" virtufin
  '';
  flake-eval =
    pkgs.runCommand "virtufin-flake-eval" { failures = builtins.toJSON evalFailures; } ''
      if [ "$failures" != "[]" ]; then
        echo "flake evaluation tests failed: $failures" >&2
        exit 1
      fi
      touch $out
    ''
    // {
      failures = evalFailures;
    };
}
