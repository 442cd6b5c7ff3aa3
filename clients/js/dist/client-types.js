// The one thing the Apollo link and the urql exchange need of a client.
export {};
