"""Every call of the PBX, from FreeSWITCH's own CDRs (mod_json_cdr), merged into the journal.

- ``legs``: one posted leg (JSON, or mod_json_cdr's ``cdr=`` form and base64 bodies)
  -> a flat record of the facts the journal needs;
- ``classify``: the legs of one call -> its journal row (direction, status, missed
  cause, extension, times, quality);
- ``writer``: legs into the store, in batches, each post answered once committed;
- ``endpoint``: the HTTP listener mod_json_cdr posts to (``[cdr] listen``);
- ``importer``: the files FreeSWITCH leaves in its ``err-log-dir``.
"""
