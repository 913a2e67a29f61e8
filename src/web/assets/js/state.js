// The page's shared state: one object the other modules import and change.

export const state = {
  byId: new Map(), // id -> summary
  order: [], // ids, in display order
  sort: { key: "id", dir: 1 },
  sortDirty: false,
  selected: null, // id
  detail: null, // the selected flow's detail JSON
  form: null, // the form of the selected flow, when it waits for the user
  tab: "request",
  filter: "",
  loading: 0, // generation of the running list load
  count: 0,
  frame: 0,
  ws: null,
};
