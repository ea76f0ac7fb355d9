# Build fixes on top of the uv2nix overlay (wheels preferred, so few are needed).
#
# - virtufin itself is built from the source tree with hatchling; its gRPC stubs are
#   generated at build time (virtufin/proto/gen is gitignored, so hatchling would leave it
#   out of the wheel) and copied into the installed package.
# - manylinux wheels with C++ extensions link libstdc++/libgcc_s, which autoPatchelf must
#   find: they get the compiler runtime as a build input.
{ pkgs, lib }:
final: prev:
let
  needsCxxRuntime = [
    "grpcio"
    "grpcio-tools"
    "grpcio-health-checking"
    "grpcio-reflection"
    "pyarrow"
    "numpy"
    "contourpy"
    "kiwisolver"
    "matplotlib"
    "psycopg-binary"
    "cffi"
  ];
  withCxxRuntime =
    name:
    lib.optionalAttrs (builtins.hasAttr name prev) {
      ${name} = prev.${name}.overrideAttrs (old: {
        buildInputs = (old.buildInputs or [ ]) ++ [ pkgs.stdenv.cc.cc.lib ];
      });
    };
  protocEnv = final.mkVirtualEnv "virtufin-protoc-env" {
    grpcio-tools = [ ];
    protobuf = [ ];
    pydantic = [ ];
  };
in
builtins.foldl' (acc: name: acc // withCxxRuntime name) { } needsCxxRuntime
// {
  virtufin = prev.virtufin.overrideAttrs (old: {
    nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [ protocEnv ];
    preBuild = (old.preBuild or "") + ''
      if [ -d virtufin/proto ]; then
        ${protocEnv}/bin/python -m virtufin.proto.build
      fi
    '';
    postInstall = (old.postInstall or "") + ''
      if [ -d virtufin/proto/gen ]; then
        cp -r virtufin/proto/gen "$out/${final.python.sitePackages}/virtufin/proto/"
      fi
    '';
  });
}
