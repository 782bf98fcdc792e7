/* Evidence workspace player: plays a session's stored segments in order and jumps to markers and bookmarks.
 *
 * Each segment is a fragmented MP4 (H.264/AAC) served by /workspace/recordings/<id>/media with HTTP Range,
 * behind the workspace session, audited per request. One <video> element plays them one after another;
 * a position on the timeline is "seconds from the session's start", and a position inside a gap (nothing
 * was recorded then) plays from the first recorded moment after it. No inline script: the page's CSP
 * allows scripts from /static only.
 */
(function () {
  "use strict";

  var video = document.getElementById("player");
  if (!video) {
    return;
  }
  var wrap = document.getElementById("player-wrap");
  var out = document.getElementById("position");
  var head = document.getElementById("playhead");
  var timeline = document.getElementById("timeline");
  var playButton = document.getElementById("play");
  var items = Array.prototype.slice.call(document.querySelectorAll("#segments li[data-src]"));
  var segments = items.map(function (li) {
    return {
      id: li.getAttribute("data-id"),
      src: li.getAttribute("data-src"),
      start: parseFloat(li.getAttribute("data-start")),
      duration: parseFloat(li.getAttribute("data-duration")),
      li: li
    };
  });
  var totalSeconds = timeline ? parseFloat(timeline.getAttribute("data-total")) || 0 : 0;
  var width = timeline ? timeline.viewBox.baseVal.width : 0;
  var current = -1;
  var frames = 0;

  function position() {
    return current < 0 ? 0 : segments[current].start + (video.currentTime || 0);
  }

  function show() {
    if (wrap.getAttribute("data-loading") === "1") {
      return;
    }
    var at = position();
    wrap.setAttribute("data-position", at.toFixed(3));
    if (out) {
      out.textContent = at.toFixed(1) + " s";
    }
    if (head && totalSeconds > 0) {
      var x = Math.min(Math.max(at / totalSeconds, 0), 1) * width;
      head.setAttribute("x1", x.toFixed(2));
      head.setAttribute("x2", x.toFixed(2));
    }
  }

  function countFrames() {
    // A decoded frame, not just a loaded page: the tests and the reviewer see the same counter.
    if (typeof video.requestVideoFrameCallback !== "function") {
      return;
    }
    video.requestVideoFrameCallback(function () {
      frames += 1;
      wrap.setAttribute("data-frames", String(frames));
      countFrames();
    });
  }

  function load(index, offset, play) {
    var segment = segments[index];
    if (current === index) {
      video.currentTime = offset;
      if (play) {
        video.play().catch(function () {});
      }
      return;
    }
    current = index;
    items.forEach(function (li, k) {
      li.classList.toggle("current", k === index);
    });
    wrap.setAttribute("data-segment", segment.id);
    // Until the new segment is loaded and positioned, the shown position is the target, not a stale one.
    wrap.setAttribute("data-loading", "1");
    wrap.setAttribute("data-position", (segment.start + offset).toFixed(3));
    video.addEventListener(
      "loadedmetadata",
      function () {
        var ready = function () {
          wrap.setAttribute("data-loading", "0");
          show();
          if (play) {
            video.play().catch(function () {});
          }
        };
        if (offset > 0) {
          video.addEventListener("seeked", ready, { once: true });
          video.currentTime = Math.min(offset, Math.max(video.duration - 0.05, 0));
        } else {
          ready();
        }
      },
      { once: true }
    );
    video.src = segment.src;
    video.load();
  }

  function seek(at) {
    if (!segments.length) {
      return;
    }
    var playing = !video.paused && !video.ended;
    for (var i = 0; i < segments.length; i += 1) {
      var s = segments[i];
      if (at >= s.start && at < s.start + s.duration) {
        load(i, at - s.start, playing);
        return;
      }
      if (s.start >= at) {
        // Inside a gap: nothing was recorded, so play from the first moment recorded after it.
        load(i, 0, playing);
        return;
      }
    }
    var last = segments.length - 1;
    load(last, segments[last].duration, false);
  }

  video.addEventListener("timeupdate", show);
  video.addEventListener("seeked", show);
  video.addEventListener("play", function () {
    if (playButton) {
      playButton.setAttribute("aria-pressed", "true");
    }
  });
  video.addEventListener("pause", function () {
    if (playButton) {
      playButton.setAttribute("aria-pressed", "false");
    }
  });
  video.addEventListener("ended", function () {
    if (current + 1 < segments.length) {
      load(current + 1, 0, true);
    }
  });

  if (playButton) {
    playButton.addEventListener("click", function () {
      if (video.paused) {
        video.play().catch(function () {});
      } else {
        video.pause();
      }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll(".seek[data-at]"), function (el) {
    var go = function (event) {
      event.preventDefault();
      seek(parseFloat(el.getAttribute("data-at")));
      wrap.setAttribute("data-sought", el.getAttribute("data-at"));
      video.focus();
    };
    el.addEventListener("click", go);
    el.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        go(event);
      }
    });
  });

  countFrames();
  if (segments.length) {
    load(0, 0, false);
  }
})();
