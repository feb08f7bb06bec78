// Words light up as the recording plays (times from the stored transcript).
(function () {
  const player = document.getElementById('player');
  const words = [...document.querySelectorAll('#transcript .w')];
  if (!player || !words.length) return;
  player.addEventListener('timeupdate', () => {
    const t = player.currentTime;
    for (const w of words) w.classList.toggle('now', t >= Number(w.dataset.start) && t < Number(w.dataset.end));
  });
})();
