# STAND-IN for `nixpkgs.legacyPackages.<system>`: the packages and builders Virtufin's flake
# calls. Builders return real derivations (so string contexts and hashes are checked when a
# test instantiates them) whose builder fails on purpose: nothing here is meant to be built.
{ lib, system }:
let
  inherit (builtins)
    all
    elem
    functionArgs
    intersectAttrs
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    match
    removeAttrs
    ;
  isLinux = lib.hasSuffix "-linux" system;
  envValue = v: v == null || isString v || isPath v || isBool v || isInt v || isFloat v || (isAttrs v && v ? outPath);
  envOk = v: envValue v || (isList v && all envValue v);
  reserved = [ "name" "system" "builder" "args" "passthru" "meta" "outputs" ];
  refuse = "echo 'stand-in derivation (tests/standins/nix): never built' >&2; exit 1";

  mkDerivationWith =
    stdenvName: argsOrFn:
    let
      args = if isFunction argsOrFn then lib.fix argsOrFn else argsOrFn;
      name = args.name or "${args.pname}-${args.version}";
      env = lib.filterAttrs (n: v: !(elem n reserved) && envOk v) args;
      drv = derivation (
        env
        // {
          inherit name system;
          builder = "/bin/sh";
          args = [ "-c" refuse ];
          standinStdenv = stdenvName;
        }
      );
    in
    args
    // (args.passthru or { })
    // drv
    // {
      meta = args.meta or { };
      overrideAttrs =
        f:
        let
          r = f args;
        in
        mkDerivationWith stdenvName (args // (if isFunction r then r args else r));
    };
  mkDerivation = mkDerivationWith "stdenv";

  fixedOutput =
    {
      name,
      hash,
      mode,
      extra ? { },
    }:
    derivation (
      extra
      // {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" refuse ];
        outputHash = hash;
        outputHashMode = mode;
      }
    );
  tool =
    pname: version: extra:
    mkDerivation ({ inherit pname version; } // extra);

  gccFor =
    version:
    tool "gcc-wrapper" version {
      passthru.cc = {
        lib = tool "gcc-lib" version { };
      };
    };
  stdenvFor =
    cc: name:
    {
      inherit cc isLinux;
      isDarwin = !isLinux;
      hostPlatform = {
        inherit system isLinux;
        isDarwin = !isLinux;
      };
      mkDerivation = mkDerivationWith name;
    };
  pythonFor =
    version: short:
    tool "python3" version {
      passthru = {
        pythonVersion = short;
        sitePackages = "lib/python${short}/site-packages";
        executable = "python${short}";
      };
    };
  # Docker references: lower-case path components, optional registry host[:port].
  imageNameOk = name: match "([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*" name != null;
  imageTagOk = tag: match "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" tag != null;

  pkgs = {
    inherit lib system;
    standin = true;
    stdenv = stdenvFor pkgs.gcc14 "stdenv";
    gcc12Stdenv = stdenvFor pkgs.gcc12 "gcc12Stdenv";
    gcc14Stdenv = stdenvFor pkgs.gcc14 "gcc14Stdenv";
    gcc12 = gccFor "12.4.0";
    gcc14 = gccFor "14.2.1";
    python311 = pythonFor "3.11.13" "3.11";
    python312 = pythonFor "3.12.11" "3.12";
    postgresql_16 = tool "postgresql" "16.9" { };
    postgresql_17 = tool "postgresql" "17.5" { };
    natscli = tool "natscli" "0.2.2" { };
    dapr-cli = tool "dapr-cli" "1.15.1" { };
    kubectl = tool "kubectl" "1.33.1" { };
    kubernetes-helm = tool "kubernetes-helm" "3.18.2" { };
    protobuf = tool "protobuf" "31.1" { };
    grpcurl = tool "grpcurl" "1.9.3" { };
    gnumake = tool "gnumake" "4.4.1" { };
    coreutils = tool "coreutils" "9.7" { };
    bashInteractive = tool "bash-interactive" "5.2p37" { };
    git = tool "git" "2.49.0" { };
    unzip = tool "unzip" "6.0" { };
    pkg-config = tool "pkg-config-wrapper" "0.29.2" { };
    autoPatchelfHook = tool "auto-patchelf-hook" "0" { };

    callPackage =
      fn: overrides:
      let
        f = if isFunction fn then fn else import fn;
      in
      f (intersectAttrs (functionArgs f) pkgs // overrides);

    fetchurl =
      { url, hash, ... }:
      fixedOutput {
        name = baseNameOf url;
        inherit hash;
        mode = "flat";
        extra = { inherit url; };
      };
    fetchFromGitHub =
      {
        owner,
        repo,
        rev,
        hash,
        ...
      }:
      fixedOutput {
        name = "source";
        inherit hash;
        mode = "recursive";
        extra = { inherit owner repo rev; };
      };
    buildGoModule =
      args:
      let
        goModules = fixedOutput {
          name = "${args.pname}-${args.version}-go-modules";
          hash = args.vendorHash;
          mode = "recursive";
        };
      in
      mkDerivation (removeAttrs args [ "vendorHash" ] // { inherit goModules; });

    runCommand =
      name: env: buildCommand:
      mkDerivation (env // { inherit name buildCommand; });
    writeShellApplication =
      {
        name,
        text,
        runtimeInputs ? [ ],
        ...
      }:
      mkDerivation {
        inherit name text runtimeInputs;
        meta.mainProgram = name;
      };
    mkShell =
      {
        packages ? [ ],
        nativeBuildInputs ? [ ],
        ...
      }@args:
      mkDerivation (
        removeAttrs args [ "packages" ]
        // {
          name = args.name or "nix-shell";
          nativeBuildInputs = packages ++ nativeBuildInputs;
        }
      );
    dockerTools = {
      binSh = tool "bin-sh" "0" { };
      usrBinEnv = tool "usr-bin-env" "0" { };
      caCertificates = tool "ca-certificates" "0" { };
      buildLayeredImage =
        {
          name,
          tag ? null,
          contents ? [ ],
          extraCommands ? "",
          config ? { },
          ...
        }:
        let
          imageTag = if tag == null then "latest" else tag;
        in
        if !(imageNameOk name) then
          throw "stand-in dockerTools: ${name} is not a valid image name"
        else if !(imageTagOk imageTag) then
          throw "stand-in dockerTools: ${imageTag} is not a valid image tag"
        else
          mkDerivation {
            name = "${baseNameOf name}.tar.gz";
            inherit contents extraCommands;
            imageConfig = builtins.toJSON config;
            passthru = {
              imageName = lib.toLower name;
              inherit imageTag;
            };
          };
    };
  };
in
pkgs
