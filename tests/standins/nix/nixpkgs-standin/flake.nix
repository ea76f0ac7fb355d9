{
  description = "STAND-IN for NixOS/nixpkgs, for Virtufin's flake evaluation tests only: the lib functions and packages the flake calls; derivations are real but never built.";

  outputs =
    { self }:
    let
      lib = import ./lib.nix;
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ] (system: import ./pkgs.nix { inherit lib system; });
    };
}
