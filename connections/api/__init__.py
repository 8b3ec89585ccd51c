"""The management API over the configuration (DESIGN.md 2.11): connections, resources, API keys,
pricing and the whole configuration as one document.

`base` is the API's shared policy (permissions, errors), `formats` its parsers and renderers,
`serializers` the objects' shapes, `views` the endpoints.

Invariants:
- One validation path. A request body is read exactly as an entry of the config file: the
  serializers hand it to `config_file.config_parse` and write through `config_file.config_apply`,
  the code `vmx_apply` runs, over the services the admin uses. A mistake gets the file's message
  under the same path, without the section prefix (`fallbackModels[1].connection`).
- Shapes are the file's (camelCase); reads add only read-only facts (`createdAt`, `updatedAt`,
  an API key's `keyPrefix`), which writes ignore, so a GET body can be PUT back unchanged.
- Secrets are write-only: every read, and every answer to a write, shows `********` in their
  place, and sending `********` back keeps the stored value. An API key's value appears once, in
  the answer to the create that made it.
- `${VAR}` references are refused, never expanded: the server's environment is not the caller's.
"""
