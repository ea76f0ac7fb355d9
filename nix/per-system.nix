# Everything the flake exposes for one system. Service outputs are generated from
# services.json (no hand-written list): packages.<service>, packages.<service>-image (Linux),
# apps.<service>.
{
  system,
  pkgs,
  lib,
  root,
  versions,
  services,
  workspace,
  pyproject-nix,
  pyproject-build-systems,
}:
let
  isLinux = lib.hasSuffix "-linux" system;
  version = versions.VIRTUFIN_VERSION;

  tools = import ./tools.nix { inherit pkgs lib system versions; };
  py = import ./python.nix {
    inherit pkgs lib versions workspace pyproject-nix pyproject-build-systems;
    inherit (tools) python;
  };
  inherit (py) venv;

  configHome = pkgs.runCommand "virtufin-config-${version}" { } ''
    mkdir -p $out/share/virtufin
    cp ${root + "/services.json"} $out/share/virtufin/services.json
    cp ${root + "/versions.env"} $out/share/virtufin/versions.env
  '';
  wrap = import ./wrappers.nix { inherit pkgs lib venv configHome; };
  mkImage = import ./images.nix { inherit pkgs lib versions configHome; };

  # Only what a build needs: no virtualenvs, caches or build results of a working copy.
  source = builtins.path {
    name = "virtufin-source";
    path = root;
    filter =
      path: type:
      !(builtins.elem (baseNameOf path) [
        ".git"
        ".venv"
        ".virtufin"
        "result"
        "__pycache__"
        ".mypy_cache"
        ".ruff_cache"
        ".pytest_cache"
        ".hypothesis"
      ]);
  };
  streamsDir = builtins.path {
    name = "virtufin-nats-streams";
    path = root + "/infra/nats/streams";
  };

  native-workers = tools.stdenv.mkDerivation {
    pname = "virtufin-native-workers";
    inherit version;
    src = builtins.path {
      name = "virtufin-native-source";
      path = root;
      filter =
        path: type:
        let
          rel = lib.removePrefix (toString root + "/") (toString path);
        in
        (rel == "native" || lib.hasPrefix "native/" rel) && !(lib.hasPrefix "native/build" rel);
    };
    buildPhase = ''
      runHook preBuild
      make -C native -j$NIX_BUILD_CORES
      runHook postBuild
    '';
    # native/Makefile builds lib<worker>.so and lib<worker>.manifest.json into native/build.
    installPhase = ''
      runHook preInstall
      mkdir -p $out/lib $out/include
      cp -r native/build/. $out/lib/
      find native -name '*.h' -exec install -m644 -t $out/include {} +
      runHook postInstall
    '';
    passthru.abiVersion = versions.NATIVE_ABI_VERSION;
  };

  nats-streams = pkgs.writeShellApplication {
    name = "virtufin-nats-streams";
    runtimeInputs = [ pkgs.natscli ];
    text = builtins.readFile ./nats-streams.sh;
  };
  brokers = pkgs.writeShellApplication {
    name = "virtufin-brokers";
    runtimeInputs = [
      tools.nats-server
      tools.redis
      tools.postgresql
      nats-streams
      pkgs.coreutils
    ];
    text = ''
      export VIRTUFIN_NATS_STREAMS_DIR="''${VIRTUFIN_NATS_STREAMS_DIR:-${streamsDir}}"
    ''
    + builtins.readFile ./brokers.sh;
  };

  servicePackages = builtins.listToAttrs (
    map (svc: {
      inherit (svc) name;
      value = wrap {
        name = "virtufin-${svc.name}";
        command = [
          "virtufin"
          "serve"
          svc.name
        ];
      };
    }) services
  );
  serviceImages = builtins.listToAttrs (
    map (svc: {
      name = "${svc.name}-image";
      value = mkImage {
        inherit (svc) name;
        cmd = [
          "virtufin"
          "serve"
          svc.name
        ];
        contents = [
          venv
          native-workers
        ];
        ports = [ svc.grpc.port ] ++ lib.optionals ((svc.healthPort or null) != null) [ svc.healthPort ];
        env = [ "VIRTUFIN_DEPLOYMENT=production" ];
      };
    }) services
  );

  cli = wrap {
    name = "virtufin";
    command = [ "virtufin" ];
  };
  main = wrap {
    name = "virtufin-run";
    command = [
      "virtufin"
      "run"
    ];
  };
  pipelinesCommand = [
    "dagster"
    "api"
    "grpc"
    "--module-name"
    "pipelines.definitions"
    "--host"
    "0.0.0.0"
    "--port"
    "4000"
  ];
  pipelines = wrap {
    name = "virtufin-pipelines";
    command = pipelinesCommand;
  };

  platformPackages = {
    default = cli;
    virtufin = cli;
    virtufin-run = main;
    inherit
      venv
      pipelines
      native-workers
      nats-streams
      brokers
      ;
    inherit (tools)
      uv
      nats-server
      redis
      ;
  };
  platformImages = {
    pipelines-image = mkImage {
      name = "pipelines";
      cmd = pipelinesCommand;
      contents = [
        venv
        native-workers
      ];
      ports = [ 4000 ];
    };
    nats-streams-image = mkImage {
      name = "nats-streams";
      cmd = [ "virtufin-nats-streams" ];
      contents = [
        nats-streams
        pkgs.natscli
        pkgs.bashInteractive
        pkgs.coreutils
      ];
    };
  };
  images = lib.optionalAttrs isLinux (serviceImages // platformImages);

  reserved = builtins.attrNames (platformPackages // platformImages);
  clashes = builtins.filter (
    svc: builtins.elem svc.name reserved || builtins.elem "${svc.name}-image" reserved
  ) services;
  packages =
    if clashes == [ ] then
      servicePackages // platformPackages // images
    else
      throw "services.json: service name(s) ${
        builtins.concatStringsSep ", " (map (s: s.name) clashes)
      } clash with the flake's own packages";

  app = drv: name: {
    type = "app";
    program = "${drv}/bin/${name}";
  };
  apps =
    builtins.mapAttrs (name: drv: app drv "virtufin-${name}") servicePackages
    // {
      default = app main "virtufin-run";
      virtufin = app cli "virtufin";
      pipelines = app pipelines "virtufin-pipelines";
      brokers = app brokers "virtufin-brokers";
      nats-streams = app nats-streams "virtufin-nats-streams";
    };

  shellPackages = [
    py.devVenv
    tools.uv
    tools.gcc
    pkgs.gnumake
    pkgs.protobuf
    pkgs.grpcurl
    tools.nats-server
    pkgs.natscli
    tools.redis
    tools.postgresql
    pkgs.dapr-cli
    pkgs.kubectl
    pkgs.kubernetes-helm
    brokers
    nats-streams
    pkgs.git
  ];
  report = builtins.concatStringsSep ", " (
    lib.mapAttrsToList (tool: v: "${tool} ${v}") tools.report
  );
  devShell = pkgs.mkShell {
    packages = shellPackages;
    UV_NO_SYNC = "1";
    UV_PYTHON = "${py.devVenv}/bin/python";
    UV_PYTHON_DOWNLOADS = "never";
    DAPR_RUNTIME_VERSION = versions.DAPR_RUNTIME_VERSION;
    VIRTUFIN_VERSION = version;
    shellHook = ''
      unset PYTHONPATH
      REPO_ROOT=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
      export REPO_ROOT
      export VIRTUFIN_NATS_STREAMS_DIR="$REPO_ROOT/infra/nats/streams"
      echo "virtufin ${version} dev shell: ${report}"
      echo "brokers: virtufin-brokers start|stop|status; Dapr: dapr init --slim --runtime-version ${versions.DAPR_RUNTIME_VERSION}"
    '';
  };
  versionProblems = tools.mismatches ++ py.pinMismatches;
  assertVersions =
    value:
    if versionProblems == [ ] then
      value
    else
      throw "versions.env disagrees with the flake: ${builtins.concatStringsSep "; " versionProblems}";

  evalFailures = import ./eval-tests.nix {
    inherit
      lib
      isLinux
      services
      versions
      packages
      apps
      shellPackages
      tools
      versionProblems
      ;
  };
  checks = import ./checks.nix {
    inherit
      pkgs
      source
      brokers
      evalFailures
      ;
    inherit (py) testVenv;
    inherit (tools) gcc;
  };
in
{
  inherit packages apps checks;
  devShells.default = assertVersions devShell;
  # Read by the tests: what was checked and what failed, without building anything.
  report = {
    tools = tools.report;
    python = py.pythonPins;
    inherit versionProblems evalFailures;
  };
}
