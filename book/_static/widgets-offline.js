// Loaded between require.js and embed-amd.js on pages with ipywidgets (nb_ipywidgets_js).
(function () {
  // html-manager's CSS fetches its Font Awesome fonts relative to the module URI requirejs
  // derives for "@jupyter-widgets/html-manager/dist/libembed-amd" (by default under the
  // page's folder, a 404): map the package to the vendored copy, laid out as in npm.
  var pkg = new URL("vendor/html-manager", document.currentScript.src).href;
  window.requirejs.config({ paths: { "@jupyter-widgets/html-manager": pkg } });

  // Widgets typeset their labels with MathJax 2's MathJax.Hub.Queue, which throws under the
  // MathJax 3 that Sphinx loads. MathJax is deferred, so it exists by DOMContentLoaded, and
  // widgets render on load: bridge the one call they make.
  window.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.startup) return;
    mathjax.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) {
            mathjax.startup.promise.then(function () { return mathjax.typesetPromise([job[2]]); });
          }
        });
      },
    };
  });
})();
