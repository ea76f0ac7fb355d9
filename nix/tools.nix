# The toolchain and brokers, each at the version versions.env writes down.
#
# From the locked nixpkgs, selected by the version's major (and minor) number:
#   python  = python<PYTHON_VERSION without dots>     e.g. PYTHON_VERSION=3.11 -> python311
#   stdenv  = gcc<GCC_VERSION>Stdenv, gcc = gcc<GCC_VERSION>
#   postgresql = postgresql_<POSTGRES_VERSION>
# Built here at exactly the pinned version (hashes in ./pins.nix):
#   uv (PyPI wheel), nats-server (buildGoModule), redis (release tarball)
#
# `mismatches` lists every tool whose version does not match versions.env: a version matches
# when it equals the pin or starts with "<pin>." (POSTGRES_VERSION=16 accepts 16.9).
{
  pkgs,
  lib,
  system,
  versions,
  pins ? import ./pins.nix,
}:
let
  isLinux = lib.hasSuffix "-linux" system;
  attrOr =
    name: what:
    if builtins.hasAttr name pkgs then
      pkgs.${name}
    else
      throw "versions.env asks for ${what}, but the locked nixpkgs has no `${name}`";
  pinFor =
    tool: version:
    let
      table = pins.${tool};
    in
    if builtins.hasAttr version table then
      table.${version}
    else
      throw (
        "versions.env pins ${tool} ${version}, but nix/pins.nix has no source hash for it "
        + "(it knows ${builtins.concatStringsSep ", " (builtins.attrNames table)}): add one"
      );

  python = attrOr "python${builtins.replaceStrings [ "." ] [ "" ] versions.PYTHON_VERSION}" "Python ${versions.PYTHON_VERSION}";
  stdenv = attrOr "gcc${versions.GCC_VERSION}Stdenv" "GCC ${versions.GCC_VERSION}";
  gcc = attrOr "gcc${versions.GCC_VERSION}" "GCC ${versions.GCC_VERSION}";
  postgresql = attrOr "postgresql_${versions.POSTGRES_VERSION}" "PostgreSQL ${versions.POSTGRES_VERSION}";

  uv =
    let
      byVersion = pinFor "uv" versions.UV_VERSION;
      pin =
        byVersion.${system} or (throw "nix/pins.nix has no uv ${versions.UV_VERSION} wheel for ${system}");
    in
    pkgs.stdenv.mkDerivation {
      pname = "uv";
      version = versions.UV_VERSION;
      src = pkgs.fetchurl { inherit (pin) url hash; };
      nativeBuildInputs = [ pkgs.unzip ] ++ lib.optionals isLinux [ pkgs.autoPatchelfHook ];
      buildInputs = lib.optionals isLinux [ pkgs.stdenv.cc.cc.lib ];
      dontConfigure = true;
      dontBuild = true;
      unpackPhase = "unzip -q $src";
      installPhase = ''
        install -Dm755 uv-${versions.UV_VERSION}.data/scripts/uv $out/bin/uv
        install -Dm755 uv-${versions.UV_VERSION}.data/scripts/uvx $out/bin/uvx
      '';
      meta.mainProgram = "uv";
    };

  nats-server =
    let
      pin = pinFor "nats-server" versions.NATS_SERVER_VERSION;
    in
    pkgs.buildGoModule {
      pname = "nats-server";
      version = versions.NATS_SERVER_VERSION;
      src = pkgs.fetchFromGitHub {
        owner = "nats-io";
        repo = "nats-server";
        rev = "v${versions.NATS_SERVER_VERSION}";
        inherit (pin) hash;
      };
      inherit (pin) vendorHash;
      doCheck = false;
      meta.mainProgram = "nats-server";
    };

  redis =
    let
      pin = pinFor "redis" versions.REDIS_VERSION;
    in
    pkgs.stdenv.mkDerivation {
      pname = "redis";
      version = versions.REDIS_VERSION;
      src = pkgs.fetchurl {
        url = "https://download.redis.io/releases/redis-${versions.REDIS_VERSION}.tar.gz";
        inherit (pin) hash;
      };
      nativeBuildInputs = [ pkgs.pkg-config ];
      makeFlags = [ "PREFIX=${builtins.placeholder "out"}" ];
      enableParallelBuilding = true;
      doCheck = false;
      meta.mainProgram = "redis-server";
    };

  matches = want: have: have == want || lib.hasPrefix "${want}." have;
  checked = [
    {
      tool = "python";
      key = "PYTHON_VERSION";
      have = python.version;
    }
    {
      tool = "gcc";
      key = "GCC_VERSION";
      have = gcc.version;
    }
    {
      tool = "postgresql";
      key = "POSTGRES_VERSION";
      have = postgresql.version;
    }
    {
      tool = "uv";
      key = "UV_VERSION";
      have = uv.version;
    }
    {
      tool = "nats-server";
      key = "NATS_SERVER_VERSION";
      have = nats-server.version;
    }
    {
      tool = "redis";
      key = "REDIS_VERSION";
      have = redis.version;
    }
  ];
  mismatches = map (c: "${c.tool} ${c.have} does not match ${c.key}=${versions.${c.key}}") (
    builtins.filter (c: !(matches versions.${c.key} c.have)) checked
  );
in
{
  inherit
    python
    stdenv
    gcc
    postgresql
    uv
    nats-server
    redis
    mismatches
    ;
  # What the dev shell and the evaluation tests report: tool -> version in use.
  report = builtins.listToAttrs (
    map (c: {
      name = c.tool;
      value = c.have;
    }) checked
  );
  # Evaluates to `value` only when every tool matches versions.env.
  assertMatching =
    value:
    if mismatches == [ ] then
      value
    else
      throw "versions.env disagrees with the flake: ${builtins.concatStringsSep "; " mismatches}";
}
