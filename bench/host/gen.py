#!/usr/bin/env python3
"""Generates the inputs of bench/host/run.sh.

  gen.py tree DIR FILES        a tree of FILES small files (100 per directory,
                               10 directories per parent)
  gen.py repo DIR FILES        the same tree, committed to a fresh git repository
  gen.py cproj DIR SOURCES     a C project: SOURCES .c files, a header, a Makefile

Every file gets an mtime in the past, so git never sees a "racily clean"
entry and `git status` does the same work on every run.
"""
import os
import subprocess
import sys

OLD = 1_600_000_000  # 2020-09-13: older than any index the benchmark writes


def tree(root, files):
    os.makedirs(root, exist_ok=True)
    per_dir = 100
    made = 0
    d = 0
    while made < files:
        # a/b/c layout: d -> d/100, d/10 % 10, d % 10
        sub = os.path.join(root, "d%03d" % (d // 100), "s%02d" % (d // 10 % 10), "t%d" % (d % 10))
        os.makedirs(sub, exist_ok=True)
        for i in range(min(per_dir, files - made)):
            p = os.path.join(sub, "f%03d.txt" % i)
            with open(p, "w") as f:
                f.write("file %d in %s\n" % (i, sub))
            os.utime(p, (OLD, OLD))
            made += 1
        d += 1


def repo(root, files):
    tree(root, files)
    env = dict(os.environ, GIT_AUTHOR_DATE="2020-09-13T12:00:00Z",
               GIT_COMMITTER_DATE="2020-09-13T12:00:00Z")
    git = ["git", "-C", root, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
           "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q"], check=True, env=env)
    subprocess.run(git + ["add", "-A"], check=True, env=env)
    subprocess.run(git + ["commit", "-q", "-m", "bench tree"], check=True, env=env)
    # One native status writes the refreshed index; later runs only read it.
    subprocess.run(git + ["status", "--porcelain"], check=True, env=env, stdout=subprocess.DEVNULL)


C_FILE = r'''#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "common.h"

struct rec_%(n)d { int key; double val; char name[32]; };

static int cmp_%(n)d(const void *a, const void *b) {
  const struct rec_%(n)d *x = a, *y = b;
  return (x->key > y->key) - (x->key < y->key);
}

static double poly_%(n)d(double x) {
  double r = 0;
  for (int i = 0; i < 16; ++i) r = r * x + (double)(i * %(n)d %% 7);
  return r;
}

static unsigned hash_%(n)d(const char *s) {
  unsigned h = 2166136261u;
  while (*s) { h ^= (unsigned char)*s++; h *= 16777619u; }
  return h;
}

static void fill_%(n)d(struct rec_%(n)d *r, int count) {
  for (int i = 0; i < count; ++i) {
    r[i].key = (i * 7919 + %(n)d) %% 1009;
    r[i].val = poly_%(n)d(i / 100.0) + sqrt((double)i);
    snprintf(r[i].name, sizeof r[i].name, "rec-%(n)d-%%d", i);
  }
}

static int classify_%(n)d(int v) {
  switch (v %% 12) {
    case 0: return v / 2;
    case 1: return v * 3 + 1;
    case 2: return v ^ 0x55;
    case 3: return v << 1;
    case 4: return v >> 1;
    case 5: return ~v;
    case 6: return v %% 97;
    case 7: return v * v;
    case 8: return v - 13;
    case 9: return v + 17;
    case 10: return v | 0x100;
    default: return v & 0xff;
  }
}

long unit_%(n)d(int count) {
  struct rec_%(n)d *r = calloc((size_t)count, sizeof *r);
  if (r == NULL) return -1;
  fill_%(n)d(r, count);
  qsort(r, (size_t)count, sizeof *r, cmp_%(n)d);
  long acc = 0;
  for (int i = 0; i < count; ++i) {
    acc += classify_%(n)d(r[i].key) + (long)hash_%(n)d(r[i].name) %% 1000;
    acc += (long)r[i].val;
    if (strlen(r[i].name) > 30) acc--;
  }
  free(r);
  return acc + COMMON_SALT;
}
'''


def cproj(root, sources):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "common.h"), "w") as f:
        f.write("#pragma once\n#define COMMON_SALT 42\n")
        for n in range(sources):
            f.write("long unit_%d(int count);\n" % n)
    for n in range(sources):
        with open(os.path.join(root, "u%03d.c" % n), "w") as f:
            f.write(C_FILE % {"n": n})
    with open(os.path.join(root, "main.c"), "w") as f:
        f.write('#include <stdio.h>\n#include "common.h"\nint main(void) {\n  long t = 0;\n')
        for n in range(sources):
            f.write("  t += unit_%d(100);\n" % n)
        f.write('  printf("%ld\\n", t);\n  return 0;\n}\n')
    with open(os.path.join(root, "Makefile"), "w") as f:
        f.write("CC ?= cc\nCFLAGS ?= -O2 -g -Wall\n")
        f.write("SRC := $(wildcard *.c)\nOBJ := $(SRC:.c=.o)\n")
        f.write("prog: $(OBJ)\n\t$(CC) $(CFLAGS) -o $@ $(OBJ) -lm\n")
        f.write("%.o: %.c common.h\n\t$(CC) $(CFLAGS) -c $< -o $@\n")
        f.write("clean:\n\trm -f prog $(OBJ)\n.PHONY: clean\n")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("tree", "repo", "cproj"):
        sys.exit(__doc__)
    {"tree": tree, "repo": repo, "cproj": cproj}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))


if __name__ == "__main__":
    main()
