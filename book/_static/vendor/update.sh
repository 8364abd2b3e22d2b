#!/usr/bin/env bash
# Re-fetch the JavaScript the built book serves itself (no CDN) from the npm registry.
#
#   book/_static/vendor/update.sh          rewrite the vendored files and SHA256SUMS
#   book/_static/vendor/update.sh --check  fetch into a temp dir, fail if anything differs
#
# Pinned versions and the registry's sha512 integrity of each tarball. To upgrade, change a
# version, put the new integrity (`npm view PKG@VERSION dist.integrity`), run, commit.
#   mathjax 3.2.2               the math renderer Sphinx loads (mathjax_path in _config.yml)
#   requirejs 2.3.8             AMD loader the widget manager needs (nb_ipywidgets_js)
#   @jupyter-widgets/html-manager 1.0.15  renders ipywidgets 8.1 state in static pages
#     (1.0.15 ships @jupyter-widgets/controls ^5.0.13, as jupyterlab_widgets 3.0.16 does)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
packages=(
  "mathjax@3.2.2 sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
  "requirejs@2.3.8 sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw=="
  "@jupyter-widgets/html-manager@1.0.15 sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tgz" "$work/out"

for entry in "${packages[@]}"; do
  read -r spec integrity <<<"$entry"
  file="$(cd "$work/tgz" && npm pack --silent "$spec" | tail -n 1)"
  actual="sha512-$(openssl dgst -sha512 -binary "$work/tgz/$file" | base64 -w0)"
  if [[ "$actual" != "$integrity" ]]; then
    echo "integrity mismatch for $spec: got $actual" >&2
    exit 1
  fi
  name="${spec%@*}"
  mkdir -p "$work/pkg/$name"
  tar -xzf "$work/tgz/$file" -C "$work/pkg/$name" --strip-components=1
done

out="$work/out"
# MathJax: the component Sphinx uses by default, the CHTML fonts it loads, the TeX extensions
# it autoloads (\boldsymbol, \cancel, \color ...) and the a11y components its menu can load.
# Left out: sre/ (3.9 MB speech engine, only for the menu's speech/explorer options).
m="$work/pkg/mathjax"
mkdir -p "$out/mathjax/es5/output/chtml/fonts" "$out/mathjax/es5/input/tex"
cp "$m/LICENSE" "$out/mathjax/"
cp "$m/es5/tex-mml-chtml.js" "$out/mathjax/es5/"
cp -r "$m/es5/output/chtml/fonts/woff-v2" "$out/mathjax/es5/output/chtml/fonts/"
cp -r "$m/es5/input/tex/extensions" "$out/mathjax/es5/input/tex/"
cp -r "$m/es5/a11y" "$out/mathjax/es5/"

# RequireJS: one file; its MIT notice is in the file's header.
mkdir -p "$out/requirejs"
cp "$work/pkg/requirejs/require.js" "$out/requirejs/"

# html-manager: the AMD bundle myst-nb loads and the Font Awesome 5 woff2 fonts its CSS
# asks for (browsers that read woff2 never fetch the eot/ttf/svg/woff fallbacks).
h="$work/pkg/@jupyter-widgets/html-manager"
mkdir -p "$out/html-manager/dist"
cp "$h/dist/embed-amd.js" "$h/dist/embed.js.LICENSE.txt" "$h/dist/"*.woff2 "$out/html-manager/dist/"

(cd "$out" && find mathjax requirejs html-manager -type f | LC_ALL=C sort | xargs sha256sum) > "$out/SHA256SUMS"

if [[ "${1:-}" == "--check" ]]; then
  diff -r --exclude=update.sh --exclude=LICENSES.md "$out" "$here" && echo "vendored files match the pinned packages"
  exit
fi

rm -rf "$here/mathjax" "$here/requirejs" "$here/html-manager"
cp -r "$out/mathjax" "$out/requirejs" "$out/html-manager" "$out/SHA256SUMS" "$here/"
du -sh "$here"
