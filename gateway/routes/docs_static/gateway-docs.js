// Starts Swagger UI on the gateway's document; a file of its own so the page's CSP forbids inline scripts.
(function () {
  "use strict";

  // The headers of the credentials the Authorize dialog took (API keys in a header, Bearer tokens).
  function credentialHeaders(system) {
    var headers = {};
    system.authSelectors.authorized().forEach(function (auth, scheme) {
      var schema = auth.get("schema");
      if (scheme === "AdminToken") {
        return;  // an admin token is no API key: the document would list nothing for it
      }
      var value = auth.get("value");
      if (!schema || typeof value !== "string" || !value) {
        return;
      }
      if (schema.get("type") === "apiKey" && schema.get("in") === "header") {
        headers[schema.get("name")] = value;
      } else if (schema.get("type") === "http" && String(schema.get("scheme")).toLowerCase() === "bearer") {
        headers.Authorization = "Bearer " + value;
      }
    });
    return headers;
  }

  // The document lists what the presented key may call: load it again whenever the key changes.
  function reloadOnAuthChange() {
    function reloading(action, system) {
      return function () {
        var result = action.apply(null, arguments);
        system.specActions.download();
        return result;
      };
    }
    return {statePlugins: {auth: {wrapActions: {authorize: reloading, logout: reloading}}}};
  }

  window.addEventListener("load", function () {
    var ui = null;  // set once Swagger UI is built; its first document load has no key yet
    ui = SwaggerUIBundle({
      url: "openapi.json",  // relative to the page: works behind a path prefix
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,  // the default badge calls validator.swagger.io
      queryConfigEnabled: false,  // no ?url= or ?configUrl= pointing the page elsewhere
      displayRequestDuration: true,
      presets: [SwaggerUIBundle.presets.apis],
      plugins: [reloadOnAuthChange],
      layout: "BaseLayout",
      requestInterceptor: function (request) {
        if (request.loadSpec && ui) {
          var headers = credentialHeaders(ui);
          Object.keys(headers).forEach(function (name) {
            request.headers[name] = headers[name];
          });
        }
        return request;
      },
    });
    window.ui = ui;
  });
})();
