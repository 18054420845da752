# Shared by scripts/test.sh; source it, do not run it.
#
#   deepdrr_ensure_offscreen_gl "$VENV_PY"
#
# The "views" test layer renders Slicer's views offscreen through VTK's EGL
# (or OSMesa) backend, which needs an OpenGL implementation: on Debian,
# Mesa's software rasteriser. When the probe cannot make an offscreen context
# and this is a Debian-like machine where we are root, install Mesa's EGL and
# GL packages with apt-get; otherwise say what is missing (the layer then
# skips, and fails in CI, where it is required). Does nothing when rendering
# already works.

DEEPDRR_GL_PACKAGES=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri)

# Sets DEEPDRR_GL_PROBLEM (empty when an offscreen context renders). The probe runs in its own
# process: a missing or broken OpenGL library can crash it.
deepdrr_probe_offscreen_gl() {
  local python="$1" output status=0
  output="$("$python" Testing/Views/slicer_views.py --probe 2>/dev/null)" || status=$?
  if [ "$status" = "0" ]; then
    DEEPDRR_GL_PROBLEM=""
  elif [ -n "$output" ]; then
    DEEPDRR_GL_PROBLEM="$(printf '%s\n' "$output" | tail -n 1)"
  else
    DEEPDRR_GL_PROBLEM="the probe crashed (exit status $status): no usable EGL/OSMesa/X OpenGL library"
  fi
  [ -z "$DEEPDRR_GL_PROBLEM" ]
}

deepdrr_ensure_offscreen_gl() {
  local python="$1"
  if deepdrr_probe_offscreen_gl "$python"; then
    return 0
  fi
  local reason="$DEEPDRR_GL_PROBLEM"
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> no offscreen OpenGL context ($reason): installing ${DEEPDRR_GL_PACKAGES[*]} with apt-get"
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
             "${DEEPDRR_GL_PACKAGES[@]}" >/dev/null; then
      if deepdrr_probe_offscreen_gl "$python"; then
        echo "==> offscreen rendering works now"
        return 0
      fi
      reason="$DEEPDRR_GL_PROBLEM"
    else
      reason="apt-get install ${DEEPDRR_GL_PACKAGES[*]} failed"
    fi
  fi
  echo "warning: no offscreen OpenGL context: $reason" >&2
  echo "         the 'views' test layer will be skipped (and fail where CI is set);" >&2
  echo "         on Debian/Ubuntu: sudo apt-get install ${DEEPDRR_GL_PACKAGES[*]}" >&2
  return 0
}
