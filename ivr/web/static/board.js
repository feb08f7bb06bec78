// The live board: the server sends the whole board whenever it changes (server-sent events).
(function () {
  const live = document.getElementById('live');
  const stages = JSON.parse(live.dataset.stages);
  const known = new Set([...document.querySelectorAll('#board tbody tr')].map(r => Number(r.dataset.id)));
  const copyWords = JSON.parse(document.getElementById('board').dataset.copyWords);
  function pct(n, total) { return total ? (100 * n / total) + '%' : '0%'; }
  // The written copies in one line, as the server writes it (ivr/web/pages/board.py copies_text).
  function copiesText(copies) {
    if (!copies) return '';
    const parts = [];
    for (const [channel, name] of copyWords.channels) {
      const byStatus = copies[channel] || {};
      const said = copyWords.statuses.filter(([status]) => byStatus[status]).map(([status, word]) => byStatus[status] + ' ' + word);
      if (said.length) parts.push(name + ': ' + said.join(', '));
    }
    for (const [key, word] of copyWords.extra) if (copies[key]) parts.push(word + ': ' + copies[key]);
    return parts.join(' · ');
  }
  function update(items) {
    if (items.some(i => !known.has(i.id))) { location.reload(); return; }  // a new message: draw it server-side
    for (const item of items) {
      const row = document.querySelector('#board tr[data-id="' + item.id + '"]');
      if (!row) continue;
      row.querySelector('[data-stage]').textContent = stages[item.stage] || item.stage;
      const paused = row.querySelector('[data-paused]');  // the trunk is down: delivery waits
      if (paused) { paused.hidden = !item.paused; paused.querySelector('[data-paused-why]').textContent = item.paused || ''; }
      const cell = row.querySelector('[data-progress]');
      const copies = cell.querySelector('[data-copies]');
      copies.textContent = copiesText(item.copies);
      copies.hidden = !copies.textContent;
      cell.querySelector('[data-barbox]').hidden = !item.progress;
      cell.querySelector('[data-none]').hidden = !!item.progress;
      if (!item.progress) continue;
      for (const seg of cell.querySelectorAll('[data-seg]')) seg.style.width = pct(item.progress[seg.dataset.seg], item.progress.members);
      for (const b of cell.querySelectorAll('[data-count]')) b.textContent = item.progress[b.dataset.count];
    }
  }
  const source = new EventSource('/board/events');
  source.addEventListener('open', () => { live.textContent = live.dataset.textLive; live.dataset.state = 'live'; });
  source.addEventListener('error', () => { live.textContent = live.dataset.textReconnecting; live.dataset.state = 'down'; });
  source.addEventListener('board', ev => { live.dataset.updated = String(Date.now()); update(JSON.parse(ev.data)); });
})();
