{
  description = "STAND-IN for pyproject-nix/build-system-pkgs, for Virtufin's flake evaluation tests only: overlays with the build backends.";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    pyproject-nix.url = "github:pyproject-nix/pyproject.nix";
    uv2nix.url = "github:pyproject-nix/uv2nix";
  };

  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
      uv2nix,
    }:
    let
      backends =
        final: prev:
        builtins.mapAttrs (pname: version: final.mkStandinPythonPackage { inherit pname version; }) {
          hatchling = "1.27.0";
          editables = "0.5";
          setuptools = "80.9.0";
          wheel = "0.45.1";
        };
    in
    {
      overlays = {
        default = backends;
        wheel = backends;
        sdist = backends;
      };
    };
}
