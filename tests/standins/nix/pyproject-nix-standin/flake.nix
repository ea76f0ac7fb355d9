{
  description = "STAND-IN for pyproject-nix/pyproject.nix, for Virtufin's flake evaluation tests only: build.packages, a Python package scope.";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    {
      build.packages = import ./packages.nix;
      lib = { };
    };
}
