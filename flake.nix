{
  description = "Virtufin: event-driven trading platform (gRPC services on pub/sub, Dagster pipelines, native C workers)";

  # Every input is pinned in flake.lock. The Python environment is built from uv.lock with
  # uv2nix; every version of the platform, toolchain, brokers and images comes from
  # versions.env, every service output from services.json.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
      uv2nix,
      pyproject-build-systems,
    }:
    let
      inherit (nixpkgs) lib;
      root = ./.;
      versions = import ./nix/versions.nix (builtins.readFile ./versions.env);
      services = (builtins.fromJSON (builtins.readFile ./services.json)).services;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ];
      workspace = uv2nix.lib.workspace.loadWorkspace { workspaceRoot = root; };
      perSystem = lib.genAttrs systems (
        system:
        import ./nix/per-system.nix {
          inherit
            system
            lib
            root
            versions
            services
            workspace
            pyproject-nix
            pyproject-build-systems
            ;
          pkgs = nixpkgs.legacyPackages.${system};
        }
      );
      pick = attr: builtins.mapAttrs (_: outputs: outputs.${attr}) perSystem;
    in
    {
      packages = pick "packages";
      apps = pick "apps";
      devShells = pick "devShells";
      checks = pick "checks";

      # Read by the tests (`nix eval .#lib.virtufin...`); nothing here is built.
      lib.virtufin = {
        inherit versions systems;
        services = map (svc: svc.name) services;
        report = pick "report";
      };
    };
}
