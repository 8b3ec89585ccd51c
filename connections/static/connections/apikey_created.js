// The new API key page: one click selects the whole key for copying. A file, not an onclick
// attribute, because the Content-Security-Policy allows no inline script.
"use strict";
document.getElementById("vmx-new-key")?.addEventListener("click", (event) => event.target.select());
