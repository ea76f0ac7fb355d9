# STAND-IN for pyproject.nix's `build.packages` (called with pkgs.callPackage): a package
# scope that overlays extend with `overrideScope`, with `mkVirtualEnv` (name -> {dist =
# [extras];} -> derivation) and `resolveBuildSystem` ({dist = [];} -> list of packages).
{
  lib,
  stdenv,
  python,
}:
let
  base = final: {
    inherit python;
    mkVirtualEnv =
      name: deps:
      stdenv.mkDerivation {
        inherit name;
        # Forces every named distribution to exist in the set when instantiated.
        virtualenvPackages = map (dist: final.${dist}) (builtins.attrNames deps);
        passthru = {
          inherit deps;
        };
      };
    resolveBuildSystem = spec: map (dist: final.${dist}) (builtins.attrNames spec);
    mkStandinPythonPackage =
      {
        pname,
        version,
        dependencies ? [ ],
      }:
      stdenv.mkDerivation {
        inherit pname version;
        passthru = {
          inherit dependencies;
        };
      };
  };
  makeScope =
    f:
    let
      final = f final;
    in
    final // { overrideScope = g: makeScope (lib.extends g f); };
in
makeScope base
