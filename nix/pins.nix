# Source hashes for the tools whose exact version versions.env pins but nixpkgs may not carry.
# Keyed by version: bumping a version in versions.env without adding its hash here is an
# evaluation error that names this file. Provenance:
#   uv           PyPI wheels (https://pypi.org/simple/uv/), sha256 of the wheel file.
#   nats-server  the upstream tag v<version> (fetchFromGitHub) and its Go module vendor hash,
#                as recorded by nixpkgs' own nats-server package at that version.
#   redis        the release tarball from download.redis.io, as recorded by nixpkgs' redis
#                package at that version.
{
  uv = {
    "0.13.8" = {
      x86_64-linux = {
        url = "https://files.pythonhosted.org/packages/c5/32/52ee34636aea1ab3f8baeeae1c3599461b8cddfb379862cc72ac61b8d91c/uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
        hash = "sha256-4YpXuLNS63yP6zF7n29TPI8K2Wc/1s80u+PPGp9qiYQ=";
      };
      aarch64-linux = {
        url = "https://files.pythonhosted.org/packages/9e/f0/d989ac5fcebf83f1c8c5d78974f27788e8364945969eb646f5d0db35d924/uv-0.13.8-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl";
        hash = "sha256-Cz6LGk9eQF4x4v8z3or0dEgx6fczhTlnHvvYw8lOeR0=";
      };
      aarch64-darwin = {
        url = "https://files.pythonhosted.org/packages/84/46/deb3a1eb3020575e41d1f9840c07185761d8d4c25cd6f58e813afb017476/uv-0.13.8-py3-none-macosx_11_0_arm64.whl";
        hash = "sha256-YraUPH/WT6xoVPeAvqbgNZ5aW8MkH4PuNXuzgnavrEk=";
      };
    };
  };
  nats-server = {
    "2.10.22" = {
      hash = "sha256-B+fSB3aTXAc/EjKSaFR2clieLNFszA2U2BdMsYJRZFE=";
      vendorHash = "sha256-0VkY1+3tlAfGDt+fhyMbmyT4TN0bw1HVJLi2+mivkrc=";
    };
  };
  redis = {
    "7.2.6" = {
      hash = "sha256-+xDWei/itFVvbLhABk3W5uMXXOjKA18HJpkOwtqfPQ4=";
    };
  };
}
