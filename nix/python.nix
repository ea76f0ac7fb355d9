# The Python environments, built from uv.lock with uv2nix on pyproject.nix's builders.
#
#   venv      the runtime environment (project dependencies): services, pipelines, CLI
#   testVenv  plus every dependency group (pytest, ruff, mypy, ...): the flake's checks
#   devVenv   like testVenv with virtufin installed editable from $REPO_ROOT: the dev shell
#
# `pinMismatches` lists every PY_<NAME> of versions.env whose distribution uv.lock locks at
# another version.
{
  pkgs,
  lib,
  python,
  versions,
  workspace,
  pyproject-nix,
  pyproject-build-systems,
}:
let
  overlay = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };
  overrides = import ./python-overrides.nix { inherit pkgs lib; };
  pythonSet = (pkgs.callPackage pyproject-nix.build.packages { inherit python; }).overrideScope (
    lib.composeManyExtensions [
      pyproject-build-systems.overlays.wheel
      overlay
      overrides
    ]
  );
  editableSet = pythonSet.overrideScope (
    lib.composeManyExtensions [
      (workspace.mkEditablePyprojectOverlay { root = "$REPO_ROOT"; })
      (final: prev: {
        virtufin = prev.virtufin.overrideAttrs (old: {
          nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ final.resolveBuildSystem { editables = [ ]; };
        });
      })
    ]
  );
  pyPins = builtins.filter (key: lib.hasPrefix "PY_" key) (builtins.attrNames versions);
  distName = key: builtins.replaceStrings [ "_" ] [ "-" ] (lib.toLower (lib.removePrefix "PY_" key));
  pinProblem =
    key:
    let
      dist = distName key;
    in
    if !(builtins.hasAttr dist pythonSet) then
      [ "${key}: uv.lock has no distribution ${dist}" ]
    else if pythonSet.${dist}.version != versions.${key} then
      [ "${key}=${versions.${key}} but uv.lock locks ${dist} ${pythonSet.${dist}.version}" ]
    else
      [ ];
in
{
  inherit pythonSet editableSet;
  venv = pythonSet.mkVirtualEnv "virtufin-env-${versions.VIRTUFIN_VERSION}" workspace.deps.default;
  testVenv = pythonSet.mkVirtualEnv "virtufin-test-env" workspace.deps.all;
  devVenv = editableSet.mkVirtualEnv "virtufin-dev-env" workspace.deps.all;
  pinMismatches = builtins.concatMap pinProblem pyPins;
  pythonPins = builtins.listToAttrs (
    map (key: {
      name = distName key;
      value = pythonSet.${distName key}.version or null;
    }) pyPins
  );
}
