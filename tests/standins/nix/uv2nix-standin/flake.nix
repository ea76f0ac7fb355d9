{
  description = "STAND-IN for pyproject-nix/uv2nix, for Virtufin's flake evaluation tests only: lib.workspace.loadWorkspace over the real uv.lock.";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    pyproject-nix.url = "github:pyproject-nix/pyproject.nix";
  };

  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
    }:
    {
      lib.workspace.loadWorkspace = import ./workspace.nix;
    };
}
