// The API documentation at /docs: Swagger UI over this server's own schema. A file of its
// own, not an inline script, so the page's Content-Security-Policy can forbid those.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  // Swagger UI would send the schema to validator.swagger.io: nothing leaves this origin.
  validatorUrl: null,
  // "Authorize" keeps the token for this tab only, not across reloads.
  persistAuthorization: false,
});
