-- What a repository's tasks run on: `auto`, `host`, `dockerfile PATH` or `image NAME`.
ALTER TABLE repositories ADD COLUMN environment TEXT NOT NULL DEFAULT 'auto';
